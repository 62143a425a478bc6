"""Database connection settings: the seed's ``database_config`` or a SQLAlchemy URL.

The password lives in a ``SecretStr`` and only leaves it when a connection is opened; everything that is
shown, logged or stored renders the URL without it (``masked_url`` / ``public_url``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rag_ray.errors import InvalidInput, PermissionDenied

DatabaseType = Literal["postgresql", "mysql", "mariadb", "sqlite", "oracle", "mssql"]


@dataclass(frozen=True)
class Driver:
    """How one database type is reached: SQLAlchemy driver, default port, connectorx scheme (if supported)."""

    sqlalchemy: str
    default_port: int | None
    connectorx: str | None


DRIVERS: dict[str, Driver] = {
    "postgresql": Driver("postgresql+psycopg", 5432, "postgresql"),
    "mysql": Driver("mysql+pymysql", 3306, "mysql"),
    "mariadb": Driver("mariadb+pymysql", 3306, "mysql"),
    "sqlite": Driver("sqlite", None, "sqlite"),
    "oracle": Driver("oracle+oracledb", 1521, None),
    "mssql": Driver("mssql+pymssql", 1433, None),
}
ALIASES = {"postgres": "postgresql", "pg": "postgresql", "sqlserver": "mssql", "sql_server": "mssql"}


def normalise_type(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DRIVERS:
        raise InvalidInput(f"unsupported database_type {name!r}; use one of {', '.join(DRIVERS)}",
                           field="database_type")
    return key


def type_of_url(url: URL) -> str:
    """``postgresql+psycopg`` → ``postgresql``; ``mysql+pymysql`` → ``mysql``."""
    return normalise_type(url.get_backend_name())


class DatabaseConfig(BaseModel):
    """Either ``url`` or host/port/database/user/password/database_type (the seed's shape)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    database_type: str = "postgresql"
    host: str | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str | None = Field(default=None, max_length=1024)
    user: str | None = Field(default=None, max_length=255)
    password: SecretStr | None = None
    url: SecretStr | None = Field(default=None, description="a SQLAlchemy URL instead of the separate fields")
    schema_name: str | None = Field(default=None, alias="schema", max_length=255)

    @model_validator(mode="after")
    def _check(self) -> DatabaseConfig:
        if self.url is None:
            kind = normalise_type(self.database_type)
            if kind != "sqlite" and not self.host:
                raise InvalidInput("database_config.host is required", field="database_config.host")
            if not self.database:
                raise InvalidInput("database_config.database is required", field="database_config.database")
        else:
            self.sqlalchemy_url()  # fail early on an unparsable URL
        return self

    @classmethod
    def from_url(cls, url: str, schema: str | None = None) -> DatabaseConfig:
        return cls(url=SecretStr(url), database_type=_type_of(url), schema_name=schema)

    @property
    def kind(self) -> str:
        return type_of_url(self.sqlalchemy_url()) if self.url else normalise_type(self.database_type)

    def sqlalchemy_url(self) -> URL:
        """The URL with the password (only for opening connections)."""
        if self.url is not None:
            try:
                url = make_url(self.url.get_secret_value())
            except ArgumentError as exc:
                raise InvalidInput("database url is not a valid SQLAlchemy URL", field="url") from exc
            type_of_url(url)
            return url
        driver = DRIVERS[self.kind]
        password = self.password.get_secret_value() if self.password else None
        return URL.create(driver.sqlalchemy, username=self.user, password=password, host=self.host,
                          port=self.port or driver.default_port, database=self.database)

    def connect_url(self) -> str:
        return self.sqlalchemy_url().render_as_string(hide_password=False)

    def masked_url(self) -> str:
        """For display and logs: the password replaced with ``***``."""
        return self.sqlalchemy_url().render_as_string(hide_password=True)

    def public_url(self) -> str:
        """The URL without any password and without the driver: names the source in ids and provenance."""
        url = self.sqlalchemy_url()
        port = url.port or DRIVERS[self.kind].default_port if self.kind != "sqlite" else None
        public = URL.create(self.kind, username=url.username, host=url.host, port=port, database=url.database)
        return public.render_as_string(hide_password=False)

    def connectorx_url(self) -> str | None:
        """The URL connectorx understands, or None when connectorx cannot read this database."""
        driver = DRIVERS[self.kind]
        if driver.connectorx is None:
            return None
        url = self.sqlalchemy_url()
        if self.kind == "sqlite":
            return f"sqlite://{url.database}" if url.database and url.database != ":memory:" else None
        return url.set(drivername=driver.connectorx, query={}).render_as_string(hide_password=False)

    def describe(self) -> dict[str, Any]:
        """What job records store: everything but the password."""
        url = self.sqlalchemy_url()
        return {"database_type": self.kind, "url": self.masked_url(), "host": url.host, "port": url.port,
                "database": url.database, "user": url.username, "schema": self.schema_name}

    def display_database(self) -> str:
        return str(self.sqlalchemy_url().database or "")


def _type_of(url: str) -> str:
    try:
        return type_of_url(make_url(url))
    except ArgumentError as exc:
        raise InvalidInput("database url is not a valid SQLAlchemy URL", field="url") from exc


def check_remote_allowed(config: DatabaseConfig, allowed_hosts: list[str]) -> None:
    """For connections submitted over HTTP: no local files, and only allow-listed ``host[:port]``."""
    if config.kind == "sqlite":
        raise InvalidInput("sqlite (file) databases cannot be submitted over the API; register a named source "
                           "with `rag-cli rdb sources add` instead", field="database_config.database_type")
    url = config.sqlalchemy_url()
    host = (url.host or "").lower()
    port = url.port or DRIVERS[config.kind].default_port
    if not host or "/" in host:
        raise InvalidInput("database_config.host must be a host name or address", field="database_config.host")
    if not _host_allowed(host, port, allowed_hosts):
        raise PermissionDenied(f"database host {host}:{port} is not in RAG_RDB_ALLOWED_HOSTS",
                               field="database_config.host")


def _host_allowed(host: str, port: int | None, allowed_hosts: list[str]) -> bool:
    for entry in (e.strip().lower() for e in allowed_hosts):
        allowed_host, allowed_port = entry.rsplit(":", 1) if _has_port(entry) else (entry, "")
        if allowed_host.strip("[]") == host.strip("[]") and allowed_port in ("", str(port)):
            return True
    return False


def _has_port(entry: str) -> bool:
    head, sep, tail = entry.strip().rpartition(":")
    return bool(sep) and tail.isdigit() and not head.endswith(":")
