"""Signed progress callbacks for ingest jobs (the seed's ``progress_callback_url``).

:class:`ProgressNotifier` POSTs JSON events to a caller-supplied URL. Because that URL comes from an API caller,
it is treated as hostile (SSRF):

- only ``http``/``https``, no credentials in the URL, and the host must be on ``allowed_hosts`` when one is set;
- the host is resolved on every send and refused if ANY address is private, loopback, link-local, multicast,
  reserved or otherwise not globally routable — unless ``allow_private`` (tests, on-prem receivers);
- the request then goes to the address that was checked (the connection is pinned to it; ``Host`` and TLS SNI
  keep the original name), so a DNS answer that changes between check and connect cannot redirect it;
- redirects are never followed (a 3xx is a failed delivery).

Each body is signed: ``X-RagRay-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` with the shared secret;
``X-RagRay-Timestamp`` carries the send time, which is also inside the signed body (``sent_at``), so receivers
can reject replays. Delivery retries with exponential backoff on connection errors, timeouts, 429 and 5xx, at
most ``max_retries`` extra attempts; it never raises into the job: failures are logged (URL without secrets)
and counted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from rag_ray.errors import InvalidInput

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-RagRay-Signature"
TIMESTAMP_HEADER = "X-RagRay-Timestamp"
EVENT_HEADER = "X-RagRay-Event"
_FIELD = "progress_callback_url"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """For receivers (and tests): constant-time check of ``X-RagRay-Signature`` against the raw body."""
    return bool(header) and hmac.compare_digest(sign(secret, body), header or "")


def is_public_address(ip: IpAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 is loopback too, and 6to4 (2002:7f00:1::/48, "global" to ipaddress) carries 127.0.0.1
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            ip = embedded
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback
                                 or ip.is_private or ip.is_unspecified)


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def mask_url(url: str) -> str:
    """scheme://host[:port]/path — no credentials, no query (it may carry tokens): safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_url_shape(url: str, allowed_hosts: Iterable[str] | None = None) -> tuple[str, str, int]:
    """(scheme, host, port) of a syntactically acceptable callback URL, else :class:`InvalidInput`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"malformed callback URL: {exc}", field=_FIELD) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("callback URL must be http or https", field=_FIELD)
    if not parts.hostname:
        raise InvalidInput("callback URL has no host", field=_FIELD)
    if parts.username or parts.password:
        raise InvalidInput("callback URL may not contain credentials", field=_FIELD)
    host = parts.hostname.lower().rstrip(".")
    if allowed_hosts is not None and host not in {h.lower().rstrip(".") for h in allowed_hosts}:
        raise InvalidInput(f"callback host {host!r} is not on the allowlist", field=_FIELD)
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def resolve_allowed(host: str, port: int, allow_private: bool, resolver: Resolver = _system_resolver) -> str:
    """The address to connect to: every address of ``host`` must be public unless ``allow_private``."""
    try:
        literal_ip = ipaddress.ip_address(host)
        addresses = [str(literal_ip)]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except OSError as exc:
            raise InvalidInput(f"callback host {host!r} does not resolve: {exc}", field=_FIELD) from None
    if not addresses:
        raise InvalidInput(f"callback host {host!r} does not resolve", field=_FIELD)
    if not allow_private:
        for addr in addresses:
            if not is_public_address(ipaddress.ip_address(addr.split("%", 1)[0])):
                raise InvalidInput(f"callback host {host!r} resolves to a non-public address {addr}", field=_FIELD)
    return addresses[0]


def validate_callback_url(url: str, *, allow_private: bool = False, allowed_hosts: Iterable[str] | None = None,
                          resolver: Resolver = _system_resolver) -> str:
    """Full check for the API at submit time (shape, allowlist, resolution); returns the URL or raises."""
    _, host, port = check_url_shape(url, allowed_hosts)
    resolve_allowed(host, port, allow_private, resolver)
    return url


class ProgressNotifier:
    """Posts signed job-progress events to one callback URL. Construction validates the URL's shape (raises
    :class:`InvalidInput`); :meth:`notify` never raises."""

    def __init__(self, url: str, secret: str | SecretStr, *, allow_private: bool = False,
                 allowed_hosts: Iterable[str] | None = None, timeout_s: float = 5.0, max_retries: int = 3,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0, resolver: Resolver = _system_resolver,
                 transport: httpx.BaseTransport | None = None):
        self.url = url
        self._secret = secret if isinstance(secret, SecretStr) else SecretStr(secret)
        if not self._secret.get_secret_value():
            raise InvalidInput("a callback secret is required to sign progress events", field="callback_secret")
        self.allow_private = allow_private
        self.allowed_hosts = None if allowed_hosts is None else tuple(allowed_hosts)
        self.scheme, self.host, self.port = check_url_shape(url, self.allowed_hosts)
        self.timeout_s, self.max_retries = timeout_s, max(0, max_retries)
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._resolver = resolver
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False, transport=transport, trust_env=False)
        self.sent = 0
        self.failed = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"ProgressNotifier(url={mask_url(self.url)!r}, sent={self.sent}, failed={self.failed})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ProgressNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def notify(self, event: str, payload: dict[str, Any] | None = None) -> bool:
        """Deliver one event (``{"event", "sent_at", **payload}``); True when the receiver answered 2xx."""
        try:
            return self._deliver(event, payload or {})
        except Exception as exc:  # never into the job: a callback is best-effort by contract
            return self._fail(f"unexpected {type(exc).__name__}: {exc}")

    def _deliver(self, event: str, payload: dict[str, Any]) -> bool:
        try:
            address = resolve_allowed(self.host, self.port, self.allow_private, self._resolver)
        except InvalidInput as exc:
            return self._fail(exc.message)
        sent_at = time.time()
        body = json.dumps({"event": event, "sent_at": sent_at, **payload}, default=str,
                          separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "rag-ray-callback/1",
                   SIGNATURE_HEADER: sign(self._secret.get_secret_value(), body),
                   TIMESTAMP_HEADER: repr(sent_at), EVENT_HEADER: event}
        error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
            retry, error = self._attempt(address, body, headers)
            if not error:
                self.sent += 1
                return True
            if not retry:
                break
        return self._fail(error)

    def _attempt(self, address: str, body: bytes, headers: dict[str, str]) -> tuple[bool, str]:
        """One POST to the pinned address → (worth retrying, error or "")."""
        request = self._client.build_request("POST", self._pinned_url(address), content=body, headers=headers)
        request.headers["Host"] = self.host if self.port in (80, 443) else f"{self.host}:{self.port}"
        if self.scheme == "https":
            request.extensions["sni_hostname"] = self.host
        try:
            response = self._client.send(request)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            return True, f"{type(exc).__name__}: {exc}"
        status = response.status_code
        if 200 <= status < 300:
            return False, ""
        if 300 <= status < 400:
            return False, f"redirect {status} not followed"
        return status == 429 or status >= 500, f"HTTP {status}"

    def _pinned_url(self, address: str) -> httpx.URL:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        return httpx.URL(self.url).copy_with(host=str(ip), port=self.port)  # httpx brackets IPv6 itself

    def _fail(self, error: str) -> bool:
        self.failed += 1
        self.last_error = error
        log.warning("progress callback to %s failed: %s", mask_url(self.url), error)
        return False
