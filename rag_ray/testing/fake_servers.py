"""Small, protocol-faithful fake model servers for tests (OpenAI, Anthropic, Gemini, Ollama).

Each runs a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread, answers with the provider's real
wire format (JSON, SSE, NDJSON), and can be scripted: fail the next N requests with a status (+ Retry-After),
delay replies, cut a stream after K tokens, or reject prompts over a context limit. Every request is recorded
so tests can assert exact retry counts (and so prove the SDKs are not retrying on their own).

    with FakeOpenAIServer() as server:
        server.fail(times=2, status=429, retry_after=0.01)
        llm = OpenAILLM("gpt-4o-mini", api_key="k", base_url=server.base_url)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit


@dataclass
class Fault:
    status: int = 500
    message: str = "scripted failure"
    code: str | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class StreamCut(Exception):
    """Raised inside a stream writer to drop the connection without the terminating chunk."""


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic, non-normalised vector for a text (so tests can check client-side normalisation)."""
    digest = hashlib.sha256(text.encode()).digest() * (dimensions // 32 + 1)
    return [(b - 127.5) / 64.0 for b in digest[:dimensions]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: avoid 40 ms delayed ACKs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent clients (benchmarks at concurrency 64+)
    fake: FakeModelServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client gave up (timeout, cancelled stream): expected in failure tests
        super().handle_error(request, client_address)


Route = tuple[str, re.Pattern[str], Callable[..., None]]
HOLD_LIMIT_S = 120.0  # a held request is dropped after this long even if its client never closes


class FakeModelServer:
    """Base: threading, recording, scripting and HTTP plumbing; subclasses add routes and wire formats."""

    name = "fake"
    base_path = ""
    routes: ClassVar[list[tuple[str, str, str]]] = []  # (method, path regex, handler method name)

    def __init__(self, *, text: str = "Hello from the fake model server", prompt_tokens: int | None = None,
                 delay_s: float = 0.0, cut_after: int | None = None, context_limit: int | None = None,
                 dimensions: int = 8, models: tuple[str, ...] = ("fake-model",)):
        self.text = text
        self.prompt_tokens = prompt_tokens
        self.delay_s = delay_s
        self.cut_after = cut_after
        self.context_limit = context_limit
        self.dimensions = dimensions
        self.models = models
        self.requests: list[RecordedRequest] = []
        self.holding = False  # accept requests and never answer (``hold``)
        self.held = 0  # requests held so far
        self.released = 0  # held requests whose client closed the connection
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[Route] = [(m, re.compile(p), getattr(self, h)) for m, p, h in self.routes]

    # ---- lifecycle ----
    def start(self) -> FakeModelServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """What to give the SDK as its base URL."""
        return self.url + self.base_path

    # ---- scripting & inspection ----
    def fail(self, times: int = 1, status: int = 500, *, message: str = "scripted failure", code: str | None = None,
             retry_after: float | None = None, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            for _ in range(times):
                self._faults.append(Fault(status, message, code, retry_after, dict(headers or {})))

    def fail_context(self, times: int = 1) -> None:
        status, message, code = self.context_fault()
        self.fail(times, status, message=message, code=code)

    def context_fault(self) -> tuple[int, str, str | None]:
        return 400, "This model's maximum context length is 8192 tokens", "context_length_exceeded"

    def count(self, path_contains: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if path_contains in r.path)

    def last(self, path_contains: str = "") -> RecordedRequest:
        with self._lock:
            return [r for r in self.requests if path_contains in r.path][-1]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    def hold(self, on: bool = True) -> None:
        """A provider that never answers: requests are read, then held until the client closes the connection
        (``held`` counts them, ``released`` counts the closed ones)."""
        self.holding = on

    # ---- request plumbing ----
    def _handle(self, handler: _Handler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(RecordedRequest(method, parts.path, parse_qs(parts.query),
                                                 {k.lower(): v for k, v in handler.headers.items()}, body))
            fault = self._faults.popleft() if self._faults else None
        if self.holding:
            return self._hold(handler)
        if self.delay_s:
            time.sleep(self.delay_s)  # a slow upstream, on the server's own thread
        if fault is not None:
            return self._send_fault(handler, fault)
        for route_method, pattern, fn in self._routes:
            match = pattern.fullmatch(parts.path)
            if match and route_method == method:
                return fn(handler, body or {}, match, parse_qs(parts.query))
        self._send_json(handler, 404, self.error_body(404, f"no route {method} {parts.path}", None))

    def _hold(self, handler: _Handler) -> None:
        with self._lock:
            self.held += 1
        handler.close_connection = True
        handler.connection.settimeout(HOLD_LIMIT_S)
        try:
            while handler.connection.recv(4096):  # b"": the client closed its end
                pass
        except OSError:
            return  # gave up after HOLD_LIMIT_S (or the socket broke): not a close seen
        with self._lock:
            self.released += 1

    def _send_fault(self, handler: _Handler, fault: Fault) -> None:
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        self._send_json(handler, fault.status, self.error_body(fault.status, fault.message, fault.code), headers)

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        return {"error": message}

    @staticmethod
    def _send_json(handler: _Handler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _send_stream(self, handler: _Handler, content_type: str, frames: Iterator[bytes]) -> None:
        """Chunked transfer; a ``StreamCut`` from the frames drops the connection mid-body."""
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for frame in frames:
                handler.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
                handler.wfile.flush()
        except StreamCut:
            handler.close_connection = True
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.wfile.write(b"0\r\n\r\n")

    # ---- answer helpers ----
    def tokens(self) -> list[str]:
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _cut_check(self, emitted: int) -> None:
        if self.cut_after is not None and emitted >= self.cut_after:
            raise StreamCut

    def count_prompt(self, texts: list[str]) -> int:
        return self.prompt_tokens if self.prompt_tokens is not None else sum(len(t.split()) for t in texts)

    def over_context(self, texts: list[str]) -> bool:
        return self.context_limit is not None and sum(len(t.split()) for t in texts) > self.context_limit

    def _context_reply(self, handler: _Handler) -> None:
        status, message, code = self.context_fault()
        self._send_json(handler, status, self.error_body(status, message, code))


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


class FakeOpenAIServer(FakeModelServer):
    name = "openai"
    base_path = "/v1"
    routes: ClassVar[list[tuple[str, str, str]]] = [
        ("POST", r"/v1/chat/completions", "chat"), ("POST", r"/v1/embeddings", "embeddings"),
        ("GET", r"/v1/models", "list_models")]

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        kinds = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded"}
        return {"error": {"message": message, "type": kinds.get(status, "server_error"), "param": None,
                          "code": code}}

    def chat(self, handler: _Handler, body: dict[str, Any], *_: Any) -> None:
        texts = [str(m.get("content", "")) for m in body.get("messages", [])]
        if self.over_context(texts):
            return self._context_reply(handler)
        model, prompt = body.get("model", "fake"), self.count_prompt(texts)
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._send_stream(handler, "text/event-stream", self._chat_frames(model, prompt, usage))
        tokens = self.tokens()
        self._send_json(handler, 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": len(tokens),
                      "total_tokens": prompt + len(tokens)}})

    def _chat_frames(self, model: str, prompt: int, usage: bool) -> Iterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield _sse(chunk({"role": "assistant", "content": ""}, None))
        tokens = self.tokens()
        for i, token in enumerate(tokens):
            self._cut_check(i)
            yield _sse(chunk({"content": token}, None))
        yield _sse(chunk({}, "stop"))
        if usage:
            yield _sse({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": model, "choices": [], "usage": {
                            "prompt_tokens": prompt, "completion_tokens": len(tokens),
                            "total_tokens": prompt + len(tokens)}})
        yield _sse("[DONE]")

    def embeddings(self, handler: _Handler, body: dict[str, Any], *_: Any) -> None:
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        dims = int(body.get("dimensions") or self.dimensions)
        as_b64 = body.get("encoding_format") == "base64"

        def encode(vector: list[float]) -> Any:
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_b64 else vector

        data = [{"object": "embedding", "index": i, "embedding": encode(fake_vector(str(t), dims))}
                for i, t in enumerate(inputs)]
        tokens = sum(len(str(t).split()) for t in inputs)
        self._send_json(handler, 200, {"object": "list", "data": data, "model": body.get("model", "fake"),
                                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def list_models(self, handler: _Handler, *_: Any) -> None:
        self._send_json(handler, 200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})


class FakeAnthropicServer(FakeModelServer):
    name = "anthropic"
    routes: ClassVar[list[tuple[str, str, str]]] = [("POST", r"/v1/messages", "messages")]
    _ERROR_TYPES: ClassVar[dict[int, str]] = {
        400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
        413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        return {"type": "error", "error": {"type": self._ERROR_TYPES.get(status, "api_error"), "message": message}}

    def context_fault(self) -> tuple[int, str, str | None]:
        return 400, "prompt is too long: 250000 tokens > 200000 maximum", None

    def messages(self, handler: _Handler, body: dict[str, Any], *_: Any) -> None:
        system = body.get("system") or ""
        texts = [str(system)] + [str(m.get("content", "")) for m in body.get("messages", [])]
        if self.over_context(texts):
            return self._context_reply(handler)
        model, prompt = body.get("model", "fake"), self.count_prompt([t for t in texts if t])
        if body.get("stream"):
            return self._send_stream(handler, "text/event-stream", self._frames(model, prompt))
        tokens = self.tokens()
        self._send_json(handler, 200, {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "".join(tokens)}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": len(tokens)}})

    def _frames(self, model: str, prompt: int) -> Iterator[bytes]:
        tokens = self.tokens()
        yield _sse({"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 1}}},
            "message_start")
        yield _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   "content_block_start")
        yield _sse({"type": "ping"}, "ping")
        for i, token in enumerate(tokens):
            self._cut_check(i)
            yield _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}},
                       "content_block_delta")
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        yield _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(tokens)}}, "message_delta")
        yield _sse({"type": "message_stop"}, "message_stop")


class FakeGeminiServer(FakeModelServer):
    name = "gemini"
    routes: ClassVar[list[tuple[str, str, str]]] = [
        ("POST", r"/v[0-9a-z]+/models/(?P<model>[^:]+):generateContent", "generate"),
        ("POST", r"/v[0-9a-z]+/models/(?P<model>[^:]+):streamGenerateContent", "stream_generate"),
        ("POST", r"/v[0-9a-z]+/models/(?P<model>[^:]+):batchEmbedContents", "embed")]
    _STATUS: ClassVar[dict[int, str]] = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                                         429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        return {"error": {"code": status, "message": message, "status": self._STATUS.get(status, "INTERNAL")}}

    def context_fault(self) -> tuple[int, str, str | None]:
        return 400, "The input token count (1100000) exceeds the maximum number of tokens allowed (1048576).", None

    def _texts(self, body: dict[str, Any]) -> list[str]:
        contents = list(body.get("contents", []))
        if body.get("systemInstruction"):
            contents.append(body["systemInstruction"])
        return [str(p.get("text", "")) for c in contents for p in c.get("parts", [])]

    def _response(self, text: str, finish: str | None, prompt: int, completion: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "modelVersion": "fake", "usageMetadata": {
            "promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": prompt + completion}}

    def generate(self, handler: _Handler, body: dict[str, Any], *_: Any) -> None:
        texts = self._texts(body)
        if self.over_context(texts):
            return self._context_reply(handler)
        tokens = self.tokens()
        self._send_json(handler, 200, self._response("".join(tokens), "STOP", self.count_prompt(texts), len(tokens)))

    def stream_generate(self, handler: _Handler, body: dict[str, Any], *_: Any) -> None:
        texts = self._texts(body)
        if self.over_context(texts):
            return self._context_reply(handler)
        self._send_stream(handler, "text/event-stream", self._frames(self.count_prompt(texts)))

    def _frames(self, prompt: int) -> Iterator[bytes]:
        tokens = self.tokens()
        for i, token in enumerate(tokens):
            self._cut_check(i)
            last = i == len(tokens) - 1
            payload = self._response(token, "STOP" if last else None, prompt, i + 1)
            yield f"data: {json.dumps(payload)}\r\n\r\n".encode()

    def embed(self, handler: _Handler, body: dict[str, Any], *_: Any) -> None:
        out = []
        for request in body.get("requests", []):
            text = " ".join(str(p.get("text", "")) for p in request.get("content", {}).get("parts", []))
            out.append({"values": fake_vector(text, int(request.get("outputDimensionality") or self.dimensions))})
        self._send_json(handler, 200, {"embeddings": out})


class FakeOllamaServer(FakeModelServer):
    name = "ollama"
    routes: ClassVar[list[tuple[str, str, str]]] = [
        ("POST", r"/api/chat", "chat"), ("POST", r"/api/embed", "embed"), ("GET", r"/api/tags", "tags")]

    def context_fault(self) -> tuple[int, str, str | None]:
        return 400, "input length exceeds the context length", None

    def _done(self, model: str, prompt: int, completion: int, content: str) -> dict[str, Any]:
        return {"model": model, "created_at": "2025-01-01T00:00:00Z", "done": True, "done_reason": "stop",
                "message": {"role": "assistant", "content": content}, "prompt_eval_count": prompt,
                "eval_count": completion, "total_duration": 1}

    def chat(self, handler: _Handler, body: dict[str, Any], *_: Any) -> None:
        texts = [str(m.get("content", "")) for m in body.get("messages", [])]
        if self.over_context(texts):
            return self._context_reply(handler)
        model, prompt, tokens = body.get("model", "fake"), self.count_prompt(texts), self.tokens()
        if body.get("stream", True):
            return self._send_stream(handler, "application/x-ndjson", self._lines(model, prompt))
        self._send_json(handler, 200, self._done(model, prompt, len(tokens), "".join(tokens)))

    def _lines(self, model: str, prompt: int) -> Iterator[bytes]:
        tokens = self.tokens()
        for i, token in enumerate(tokens):
            self._cut_check(i)
            yield (json.dumps({"model": model, "created_at": "2025-01-01T00:00:00Z", "done": False,
                               "message": {"role": "assistant", "content": token}}) + "\n").encode()
        yield (json.dumps(self._done(model, prompt, len(tokens), "")) + "\n").encode()

    def embed(self, handler: _Handler, body: dict[str, Any], *_: Any) -> None:
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        dims = self.dimensions  # like most Ollama models, ignores `dimensions` (the client truncates)
        self._send_json(handler, 200, {"model": body.get("model", "fake"),
                                       "embeddings": [fake_vector(str(t), dims) for t in inputs],
                                       "prompt_eval_count": sum(len(str(t).split()) for t in inputs)})

    def tags(self, handler: _Handler, *_: Any) -> None:
        self._send_json(handler, 200, {"models": [{"name": m, "model": m} for m in self.models]})
