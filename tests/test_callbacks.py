"""ProgressNotifier against a real HTTP receiver on 127.0.0.1 (allow_private=True) and SSRF refusals."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag_ray.errors import InvalidInput
from rag_ray.ingest.callbacks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ProgressNotifier,
    is_public_address,
    mask_url,
    validate_callback_url,
    verify_signature,
)

SECRET = "callback-secret-for-tests"


@dataclass
class Receiver:
    port: int
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 200
    requests: list[dict[str, object]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # a 'hang' status waits on this
    received: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/progress?token=abc"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            state.received.release()
            status = state.statuses.pop(0) if state.statuses else 200
            if status == -1:  # hang until the test ends: the client must time out
                state.release.wait(10)
                return
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", f"http://127.0.0.1:{state.port}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def _notifier(url: str, **kw: object) -> ProgressNotifier:
    options: dict[str, object] = {"allow_private": True, "backoff_s": 0.0, "timeout_s": 2.0}
    options.update(kw)
    return ProgressNotifier(url, SECRET, **options)  # type: ignore[arg-type]


def test_delivers_signed_event(receiver: Receiver) -> None:
    with _notifier(receiver.url) as notifier:
        assert notifier.notify("progress", {"job_id": "j1", "processed": 3, "total": 10}) is True
    assert (notifier.sent, notifier.failed) == (1, 0)
    [req] = receiver.requests
    headers = {k.lower(): v for k, v in req["headers"].items()}  # type: ignore[union-attr]
    body = req["body"]
    assert isinstance(body, bytes)
    assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature("wrong-secret", body, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature(SECRET, body + b" ", headers[SIGNATURE_HEADER.lower()])
    event = json.loads(body)
    assert event["event"] == "progress" and event["job_id"] == "j1" and event["processed"] == 3
    assert float(headers[TIMESTAMP_HEADER.lower()]) == event["sent_at"]  # the timestamp is inside the signed body
    assert req["path"] == "/progress?token=abc"
    assert headers["content-type"] == "application/json"


def test_hostname_is_pinned_to_the_checked_address(receiver: Receiver) -> None:
    url = f"http://hooks.example.test:{receiver.port}/cb"
    notifier = _notifier(url, resolver=lambda host, port: ["127.0.0.1"])
    assert notifier.notify("done") is True
    headers = receiver.requests[0]["headers"]
    assert headers["Host"] == f"hooks.example.test:{receiver.port}"  # type: ignore[index]


def test_retries_5xx_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses = [503, 502]
    notifier = _notifier(receiver.url, max_retries=3)
    assert notifier.notify("progress") is True
    assert len(receiver.requests) == 3 and notifier.sent == 1 and notifier.failed == 0


def test_gives_up_after_max_retries_without_raising(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    notifier = _notifier(receiver.url, max_retries=2)
    assert notifier.notify("progress") is False
    assert len(receiver.requests) == 3
    assert notifier.failed == 1 and notifier.last_error == "HTTP 500"


def test_4xx_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [404]
    notifier = _notifier(receiver.url, max_retries=3)
    assert notifier.notify("progress") is False
    assert len(receiver.requests) == 1


def test_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.statuses = [302]
    notifier = _notifier(receiver.url)
    assert notifier.notify("progress") is False
    assert [r["path"] for r in receiver.requests] == ["/progress?token=abc"]  # /elsewhere never requested
    assert notifier.last_error == "redirect 302 not followed"


def test_timeout_counts_as_failure(receiver: Receiver) -> None:
    receiver.statuses = [-1]
    notifier = _notifier(receiver.url, timeout_s=0.3, max_retries=0)
    assert notifier.notify("progress") is False
    assert notifier.last_error is not None and "Timeout" in notifier.last_error


def test_connection_refused_is_retried_then_counted(receiver: Receiver) -> None:
    closed = ProgressNotifier("http://127.0.0.1:1/cb", SECRET, allow_private=True, backoff_s=0.0, max_retries=1)
    assert closed.notify("progress") is False
    assert closed.failed == 1 and closed.sent == 0


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/cb",
    "http://10.1.2.3:{port}/cb",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]:{port}/cb",
    "http://[::ffff:127.0.0.1]:{port}/cb",
    "http://0.0.0.0:{port}/cb",
    "http://224.0.0.1/cb",
])
def test_private_addresses_refused_without_allow_private(receiver: Receiver, url: str) -> None:
    url = url.format(port=receiver.port)
    notifier = ProgressNotifier(url, SECRET, backoff_s=0.0)
    assert notifier.notify("progress") is False
    assert notifier.failed == 1 and "non-public" in (notifier.last_error or "")
    assert receiver.requests == []
    with pytest.raises(InvalidInput) as err:
        validate_callback_url(url)
    assert err.value.field == "progress_callback_url"


def test_hostname_resolving_to_private_is_refused(receiver: Receiver) -> None:
    resolver = lambda host, port: ["93.184.216.34", "10.0.0.5"]  # noqa: E731 - one bad answer is enough
    notifier = ProgressNotifier(f"http://rebind.example.test:{receiver.port}/", SECRET, resolver=resolver)
    assert notifier.notify("progress") is False
    assert receiver.requests == []
    with pytest.raises(InvalidInput):
        validate_callback_url("http://rebind.example.test/", resolver=resolver)
    assert validate_callback_url("https://hooks.example.test/x", resolver=lambda h, p: ["93.184.216.34"])


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/x", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("http:///nohost", "no host"),
    ("http://user:pw@example.com/", "credentials"),
    ("http://example.com:99999/", "malformed"),
])
def test_bad_url_shapes_rejected(url: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ProgressNotifier(url, SECRET)


def test_allowlist(receiver: Receiver) -> None:
    with pytest.raises(InvalidInput, match="allowlist"):
        ProgressNotifier("https://evil.example.test/cb", SECRET, allowed_hosts=["hooks.example.test"])
    notifier = _notifier(receiver.url, allowed_hosts=["127.0.0.1"])
    assert notifier.notify("progress") is True


def test_secret_required_and_never_shown() -> None:
    with pytest.raises(InvalidInput):
        ProgressNotifier("https://hooks.example.test/cb", "")
    notifier = ProgressNotifier("https://hooks.example.test/cb?token=t", SECRET)
    assert SECRET not in repr(notifier) and "token" not in repr(notifier)
    assert mask_url("https://u:p@h.example.test:8443/a?token=t") == "https://h.example.test:8443/a"


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.0.0.1", False),
    ("172.16.5.4", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("::1", False), ("fe80::1", False), ("fc00::1", False), ("::ffff:10.0.0.1", False), ("ff02::1", False),
    ("240.0.0.1", False),
])
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
