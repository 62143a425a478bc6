"""Where a source database connection may go.

- **URL parameters**: every driver copies a URL's query parameters into its connect call, and each has its own
  ways to re-point it (libpq ``host``/``hostaddr``/``port``/``service``, pymysql ``unix_socket``, pymssql
  ``server``, oracledb ``dsn``/``https_proxy``) or to make it read local files (``passfile``, ``sslkey``,
  ``read_default_file``, ``local_infile``, ``wallet_location``). So parameters are an allowlist per database
  type, with their values checked too; anything not named here is refused.
- **Hosts**: one host name or IP address, never a path (unix socket), a list, ``host:port`` or an instance name.
- **Allowed hosts** (connections submitted over HTTP): the host is resolved and the answer checked against
  ``RAG_RDB_ALLOWED_HOSTS``; the connection is then made to that checked address (see ``DatabaseConfig.pinned``),
  so a DNS answer that changes between check and connect cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from rag_ray.errors import InvalidInput, PermissionDenied

Resolver = Callable[[str, int], list[str]]
Check = Callable[[str], str | None]  # why a value is wrong, or None

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?\.?")
_TOKEN = re.compile(r"[A-Za-z0-9_.$#-]{1,128}")  # charsets, service names, SIDs
_LABEL = re.compile(r"[\w .:@+-]{1,64}")  # application names


def _choice(*values: str) -> Check:
    return lambda v: None if v in values else f"must be one of {', '.join(values)}"


def _integer(low: int, high: int) -> Check:
    def check(value: str) -> str | None:
        ok = value.isascii() and value.isdigit() and low <= int(value) <= high
        return None if ok else f"must be a whole number from {low} to {high}"

    return check


def _matching(pattern: re.Pattern[str], what: str) -> Check:
    return lambda v: None if pattern.fullmatch(v) else f"must be {what}"


_TIMEOUT = _integer(1, 300)
_MYSQL: dict[str, Check] = {"charset": _matching(_TOKEN, "a character set name"), "connect_timeout": _TIMEOUT,
                            "read_timeout": _integer(1, 86_400), "write_timeout": _integer(1, 86_400)}
PARAMETERS: dict[str, dict[str, Check]] = {
    "postgresql": {
        "sslmode": _choice("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        "connect_timeout": _TIMEOUT, "application_name": _matching(_LABEL, "a short label"),
        "client_encoding": _matching(_TOKEN, "an encoding name"), "keepalives": _choice("0", "1"),
        "keepalives_idle": _integer(1, 7200), "keepalives_interval": _integer(1, 600),
        "keepalives_count": _integer(1, 100), "tcp_user_timeout": _integer(0, 3_600_000),
    },
    "mysql": _MYSQL,
    "mariadb": _MYSQL,
    "mssql": {"charset": _matching(_TOKEN, "a character set name"), "login_timeout": _TIMEOUT,
              "timeout": _integer(0, 86_400), "appname": _matching(_LABEL, "a short label"),
              "tds_version": _choice("7.0", "7.1", "7.2", "7.3", "7.4")},
    # a service name goes into the Oracle connect descriptor: a plain token only
    "oracle": {"service_name": _matching(_TOKEN, "a service name")},
    "sqlite": {"timeout": _integer(0, 3600)},
}


def check_parameters(kind: str, query: Mapping[str, str | Sequence[str]], field: str) -> None:
    """Every URL query parameter must be on ``kind``'s allowlist, given once, with a valid value."""
    allowed = PARAMETERS.get(kind, {})
    for name, value in query.items():
        details = {"parameter": name}
        if name not in allowed:
            names = ", ".join(allowed) or "none"
            hint = "" if kind == "sqlite" else "; the host and port come only from the URL's host:port"
            raise InvalidInput(f"connection parameter {name!r} is not allowed for {kind} (allowed: {names}){hint}",
                               field=field, details=details)
        if not isinstance(value, str):
            raise InvalidInput(f"connection parameter {name!r} is given more than once", field=field,
                               details=details)
        problem = allowed[name](value)
        if problem:
            raise InvalidInput(f"connection parameter {name!r} {problem}", field=field, details=details)


def check_host(host: str | None, field: str) -> None:
    """One host name or IP address: no unix-socket path, host list, ``host:port``, instance or zone."""
    if not host:
        raise InvalidInput("a database host is required (connections without one use local sockets)", field=field)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise InvalidInput("the database host must be one host name or IP address (no paths, lists, ports "
                               "or instance names)", field=field) from None
        return
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise InvalidInput("the database host may not carry an IPv6 zone", field=field)


def check_port(port: int | None, field: str) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise InvalidInput(f"port {port} is out of range (1-65535)", field=field)


def check_token(value: str | None, what: str, field: str) -> None:
    """For values spliced into a connect descriptor (Oracle SID / service name)."""
    if value and not _TOKEN.fullmatch(value):
        raise InvalidInput(f"the {what} may only hold letters, digits and _ . $ # -", field=field)


# ---- RAG_RDB_ALLOWED_HOSTS ----
class AllowedEntry(NamedTuple):
    host: str  # lower case, IPv6 without brackets
    port: int | None


def parse_entries(allowed_hosts: Iterable[str]) -> list[AllowedEntry]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    entries = []
    for raw in (e.strip().lower() for e in allowed_hosts):
        head, sep, tail = raw.rpartition(":")
        has_port = bool(sep) and tail.isdigit() and (not head.count(":") or head.endswith("]"))
        host, port = (head, int(tail)) if has_port else (raw, None)
        if host:
            entries.append(AllowedEntry(host.strip("[]"), port))
    return entries


def name_allowed(host: str, port: int, allowed_hosts: Iterable[str]) -> bool:
    """``host`` as written (name or address) is on the list, for ``port``."""
    host = host.lower().strip("[]")
    return any(e.host == host and e.port in (None, port) for e in parse_entries(allowed_hosts))


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:10.0.0.5 is 10.0.0.5
    return ip


def _addresses(host: str, port: int, resolver: Resolver) -> list[str]:
    try:
        return [str(_ip(host))]  # a literal is its own answer
    except ValueError:
        pass
    return [str(_ip(a)) for a in resolver(host, port)]


def allowed_address(host: str, port: int, allowed_hosts: Iterable[str], resolver: Resolver = system_resolver,
                    field: str = "database_config.host") -> str:
    """The address to connect to, resolved once and checked against ``allowed_hosts``.

    An entry naming ``host`` itself admits whatever it resolves to (the operator vouches for that name);
    otherwise every address ``host`` resolves to must be an address of an entry for this port, so a name
    that points somewhere else (``127.0.0.1.nip.io``, a rebinding name) is refused.
    """
    entries = [e for e in parse_entries(allowed_hosts) if e.port in (None, port)]
    by_name = name_allowed(host, port, allowed_hosts)
    try:
        addresses = _addresses(host, port, resolver)
    except OSError as exc:
        if by_name:
            raise InvalidInput(f"database host {host!r} does not resolve: {exc}", field=field) from None
        addresses = []
    if not addresses or not (by_name or set(addresses) <= _entry_addresses(entries, port, resolver)):
        shown = f" (it resolves to {', '.join(addresses)})" if addresses else ""
        raise PermissionDenied(f"database host {host}:{port}{shown} is not in RAG_RDB_ALLOWED_HOSTS", field=field)
    return addresses[0]


def _entry_addresses(entries: list[AllowedEntry], port: int, resolver: Resolver) -> set[str]:
    found: set[str] = set()
    for entry in entries:
        try:
            found.update(_addresses(entry.host, port, resolver))
        except OSError:
            continue  # an entry that does not resolve admits nothing
    return found
