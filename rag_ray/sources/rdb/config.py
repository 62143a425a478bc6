"""Database connection settings: the seed's ``database_config`` or a SQLAlchemy URL.

The password lives in a ``SecretStr`` and only leaves it when a connection is opened; everything that is
shown, logged or stored renders the URL without it (``masked_url`` / ``public_url``).

Every config is checked when it is built (``network``): one host, never a unix socket; a valid port; only
the URL parameters its database type allows. A config admitted over HTTP (``admit_remote``) also carries the
address its host was checked at and connects there; every config carries its connect timeout.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rag_ray.errors import DriverUnavailable, InvalidInput, PermissionDenied
from rag_ray.sources.rdb.network import (
    Resolver,
    allowed_address,
    check_host,
    check_parameters,
    check_port,
    check_token,
    name_allowed,
    system_resolver,
)

DatabaseType = Literal["postgresql", "mysql", "mariadb", "sqlite", "oracle", "mssql"]


DEFAULT_CONNECT_TIMEOUT_S = 10.0
URL_FIELD = "database_config.url"
_TLS_REQUIRED = ("require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class Driver:
    """How one database type is reached: SQLAlchemy driver, its DBAPI module, default port, connectorx scheme
    (if supported) and the connect() keyword that bounds connecting."""

    sqlalchemy: str
    module: str
    default_port: int | None
    connectorx: str | None
    timeout_arg: str | None


DRIVERS: dict[str, Driver] = {
    "postgresql": Driver("postgresql+psycopg", "psycopg", 5432, "postgresql", "connect_timeout"),
    "mysql": Driver("mysql+pymysql", "pymysql", 3306, "mysql", "connect_timeout"),
    "mariadb": Driver("mariadb+pymysql", "pymysql", 3306, "mysql", "connect_timeout"),
    "sqlite": Driver("sqlite", "sqlite3", None, "sqlite", None),
    "oracle": Driver("oracle+oracledb", "oracledb", 1521, None, "tcp_connect_timeout"),
    "mssql": Driver("mssql+pymssql", "pymssql", 1433, None, "login_timeout"),
}
ALIASES = {"postgres": "postgresql", "pg": "postgresql", "sqlserver": "mssql", "sql_server": "mssql"}
_EXTRAS = {"oracle": "oracle", "mssql": "mssql"}


def normalise_type(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DRIVERS:
        raise InvalidInput(f"unsupported database_type {name!r}; use one of {', '.join(DRIVERS)}",
                           field="database_type")
    return key


def type_of_url(url: URL) -> str:
    """``postgresql+psycopg`` → ``postgresql``; ``mysql+pymysql`` → ``mysql``."""
    return normalise_type(url.get_backend_name())


def driver_missing(kind: str, field: str = "database_type") -> DriverUnavailable:
    extra = _EXTRAS.get(kind)
    hint = f" (install it: uv sync --extra {extra})" if extra else ""
    return DriverUnavailable(f"the {kind} driver ({DRIVERS[kind].module}) is not installed on this server{hint}",
                             field=field)


def require_driver(kind: str, field: str = "database_type") -> None:
    """Refuse a database type whose driver is not installed, before anything tries to connect."""
    if importlib.util.find_spec(DRIVERS[kind].module) is None:
        raise driver_missing(kind, field)


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
    # not inputs: set by admit_remote / with_connect_timeout, and carried to Ray workers with the config
    _address: str | None = PrivateAttr(default=None)
    _connect_timeout_s: float = PrivateAttr(default=DEFAULT_CONNECT_TIMEOUT_S)

    @model_validator(mode="after")
    def _check(self) -> DatabaseConfig:
        if self.url is None:
            kind = normalise_type(self.database_type)
            if kind != "sqlite":
                check_host(self.host, "database_config.host")
            if not self.database:
                raise InvalidInput("database_config.database is required", field="database_config.database")
            if kind == "oracle":
                check_token(self.database, "Oracle SID", "database_config.database")
        else:
            _check_url(self.sqlalchemy_url(), self.kind)
        return self

    @classmethod
    def from_url(cls, url: str, schema: str | None = None) -> DatabaseConfig:
        return cls(url=SecretStr(url), database_type=_type_of(url), schema_name=schema)

    @property
    def kind(self) -> str:
        return type_of_url(self.sqlalchemy_url()) if self.url else normalise_type(self.database_type)

    @property
    def address(self) -> str | None:
        """The checked address this config connects to (None: its host is resolved when connecting)."""
        return self._address

    @property
    def connect_timeout_s(self) -> float:
        return self._connect_timeout_s

    def pinned(self, address: str) -> DatabaseConfig:
        """This config, connecting to ``address`` (checked by ``admit_remote``) instead of resolving its host."""
        copy = self.model_copy()
        copy._address = address
        return copy

    def with_connect_timeout(self, seconds: float) -> DatabaseConfig:
        copy = self.model_copy()
        copy._connect_timeout_s = seconds
        return copy

    def sqlalchemy_url(self) -> URL:
        """The URL with the password (only for opening connections), on the driver its parameters were checked
        for (``mysql://`` or ``mysql+mysqldb://`` would otherwise pick another driver, with other parameters)."""
        if self.url is not None:
            try:
                url = make_url(self.url.get_secret_value())
            except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
                raise InvalidInput("database url is not a valid SQLAlchemy URL (is the port a number?)",
                                   field=URL_FIELD) from exc
            return url.set(drivername=DRIVERS[type_of_url(url)].sqlalchemy)
        driver = DRIVERS[self.kind]
        password = self.password.get_secret_value() if self.password else None
        return URL.create(driver.sqlalchemy, username=self.user, password=password, host=self.host,
                          port=self.port or driver.default_port, database=self.database)

    def connect_url(self) -> str:
        return self.sqlalchemy_url().render_as_string(hide_password=False)

    def engine_url(self) -> URL:
        """What the engine dials: for a pinned config the checked address, except on PostgreSQL, where libpq
        takes it separately (``hostaddr``) and keeps the name for TLS verification."""
        url = self.sqlalchemy_url()
        if self._address is None or self.kind == "postgresql":
            return url
        return url.set(host=self._address)

    def connect_args(self) -> dict[str, Any]:
        """Driver keywords: the pinned address (PostgreSQL) and the connect timeout (the URL's own, if lower)."""
        driver = DRIVERS[self.kind]
        if self.kind == "sqlite":
            return {"check_same_thread": False}  # Ray Data and the API use an engine from several threads
        args: dict[str, Any] = {"hostaddr": self._address} if self._address and self.kind == "postgresql" else {}
        if driver.timeout_arg:
            timeout = self._connect_timeout_s
            own = self.sqlalchemy_url().query.get(driver.timeout_arg)
            if isinstance(own, str) and own.isdigit():
                timeout = min(timeout, int(own))
            args[driver.timeout_arg] = timeout if self.kind == "oracle" else max(1, math.ceil(timeout))
        return args

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
        if url.query.get("sslmode") in _TLS_REQUIRED:
            return None  # connectorx gets no parameters, so it would drop the TLS requirement
        cx_url = url.set(drivername=driver.connectorx, query={}, host=self._address or url.host)
        return cx_url.render_as_string(hide_password=False)

    def describe(self) -> dict[str, Any]:
        """What job records store: everything but the password."""
        url = self.sqlalchemy_url()
        return {"database_type": self.kind, "url": self.masked_url(), "host": url.host, "port": url.port,
                "address": self._address, "database": url.database, "user": url.username,
                "schema": self.schema_name}

    def display_database(self) -> str:
        return str(self.sqlalchemy_url().database or "")


def _type_of(url: str) -> str:
    try:
        return type_of_url(make_url(url))
    except (ArgumentError, ValueError) as exc:
        raise InvalidInput("database url is not a valid SQLAlchemy URL (is the port a number?)",
                           field=URL_FIELD) from exc


def _check_url(url: URL, kind: str) -> None:
    """A URL may only say what the separate fields can: one host, a port, allow-listed parameters."""
    check_parameters(kind, url.query, URL_FIELD)
    if kind == "sqlite":
        return
    check_host(url.host, URL_FIELD)
    check_port(url.port, URL_FIELD)
    if kind == "oracle":  # without a SID or service name, oracledb reads the host as a tnsnames.ora alias
        if bool(url.database) == ("service_name" in url.query):
            raise InvalidInput("an Oracle URL names exactly one of a SID (its path) or ?service_name=",
                               field=URL_FIELD)
        check_token(url.database, "Oracle SID", URL_FIELD)


def _remote_target(config: DatabaseConfig) -> tuple[str, int]:
    """(host, port) of a config submitted over HTTP; SQLite files are never reachable that way."""
    if config.kind == "sqlite":
        raise InvalidInput("sqlite (file) databases cannot be submitted over the API; register a named source "
                           "with `rag-cli rdb sources add` instead", field="database_config.database_type")
    url = config.sqlalchemy_url()
    check_host(url.host, "database_config.host")
    port = url.port or DRIVERS[config.kind].default_port
    assert port is not None  # every non-file database type has a default port
    return str(url.host).lower(), port


def check_remote_allowed(config: DatabaseConfig, allowed_hosts: list[str]) -> None:
    """The host as written (no DNS) is allow-listed: a quick test; ``admit_remote`` is what the API uses."""
    host, port = _remote_target(config)
    if not name_allowed(host, port, allowed_hosts):
        raise PermissionDenied(f"database host {host}:{port} is not in RAG_RDB_ALLOWED_HOSTS",
                               field="database_config.host")


def admit_remote(config: DatabaseConfig, allowed_hosts: list[str], resolver: Resolver = system_resolver
                 ) -> DatabaseConfig:
    """A config submitted over HTTP, ready to connect: its driver installed, its host resolved once and every
    address checked against ``RAG_RDB_ALLOWED_HOSTS``, then pinned to the checked address."""
    host, port = _remote_target(config)
    require_driver(config.kind, field="database_config.database_type")
    return config.pinned(allowed_address(host, port, allowed_hosts, resolver))
