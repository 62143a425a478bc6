"""Google Gemini through google-genai. SDK retries are pinned to one attempt (its implicit
connection-error retry sleeps 1-10 s otherwise): only the manager retries."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from rag_ray.errors import ConfigError
from rag_ray.llm.base import LLMS, ChatMessage, GenerationParams, StreamChunk, Usage
from rag_ray.llm.sdk import SDKChatLLM, split_system
from rag_ray.sdk.errors import StatusInfo, parse_retry_after

DEFAULT_MODEL = "gemini-2.0-flash"
_SECONDS = re.compile(r"^\s*([\d.]+)s\s*$")


def google_client(api_key: str | None, base_url: str | None, timeout_s: float) -> Any:
    """A ``genai.Client`` with SDK retries disabled; shared with the embedder."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=base_url or None, timeout=int(timeout_s * 1000),
                                retry_options=types.HttpRetryOptions(attempts=1))
    try:
        return genai.Client(api_key=api_key, http_options=options)
    except ValueError as exc:
        raise ConfigError(f"google: cannot build the client: {exc}", field="LLM_API_KEY") from exc


def _retry_headers(exc: Any) -> dict[str, str]:
    """Retry-After as headers, from the HTTP header or Gemini's RetryInfo ``retryDelay: "7s"``."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if parse_retry_after(headers) is not None:
        return {"retry-after": str(parse_retry_after(headers))}
    error = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else {}
    for detail in error.get("details", []) if isinstance(error, dict) else []:
        match = _SECONDS.match(str(detail.get("retryDelay", ""))) if isinstance(detail, dict) else None
        if match:
            return {"retry-after": match.group(1)}
    return {}


def google_status(exc: BaseException) -> StatusInfo | None:
    from google.genai import errors

    if isinstance(exc, errors.APIError) and isinstance(exc.code, int):
        return exc.code, str(exc.message or exc), _retry_headers(exc), exc.status
    return None


def _contents(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    roles = {"user": "user", "assistant": "model"}
    return [{"role": roles[m.role], "parts": [{"text": m.content}]} for m in messages]


class GoogleLLM(SDKChatLLM):
    provider = "google"

    def __init__(self, model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
                 timeout_s: float = 60.0):
        self.model = model
        self._client = google_client(api_key, base_url, timeout_s)

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        return google_status(exc)

    def _request(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        from google.genai import types

        system, turns = split_system(messages)
        config = types.GenerateContentConfig(
            system_instruction=system, temperature=params.temperature, max_output_tokens=params.max_tokens,
            stop_sequences=list(params.stop) or None,
            http_options=types.HttpOptions(timeout=max(1, int(params.timeout_s * 1000))) if params.timeout_s else None)
        return {"model": self.model, "contents": _contents(turns), "config": config}

    @staticmethod
    def _usage(response: Any) -> Usage | None:
        meta = response.usage_metadata
        if meta is None:
            return None
        return Usage(meta.prompt_token_count or 0, meta.candidates_token_count or 0)

    @staticmethod
    def _finish(response: Any) -> object:
        candidates = response.candidates or []
        return candidates[0].finish_reason if candidates else None

    async def _complete(self, messages: Sequence[ChatMessage], params: GenerationParams
                        ) -> tuple[str, Usage, object]:
        response = await self._client.aio.models.generate_content(**self._request(messages, params))
        return response.text or "", self._usage(response) or Usage(), self._finish(response) or "stop"

    async def _chunks(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        stream = await self._client.aio.models.generate_content_stream(**self._request(messages, params))
        async for response in stream:
            finish = self._finish(response)
            yield StreamChunk(delta=response.text or "", finish_reason=None if finish is None else str(
                getattr(finish, "name", finish)), usage=self._usage(response))


@LLMS.register("google")
def _create(model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
            **options: Any) -> GoogleLLM:
    return GoogleLLM(model or DEFAULT_MODEL, api_key=api_key, base_url=base_url,
                     timeout_s=float(options.get("timeout_s", 60.0)))
