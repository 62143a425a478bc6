"""OpenAI (and OpenAI-compatible servers: vLLM, LM Studio, …) through the official SDK.

``base_url=None`` lets the SDK use ``OPENAI_BASE_URL``. ``max_retries=0``: only the manager retries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from rag_ray.errors import ConfigError
from rag_ray.llm.base import LLMS, ChatMessage, GenerationParams, StreamChunk, Usage
from rag_ray.llm.sdk import SDKChatLLM, request_id_kw, timeout_kw
from rag_ray.sdk.errors import StatusInfo


def openai_status(exc: BaseException) -> StatusInfo | None:
    """(status, message, headers, code) of an ``openai.APIStatusError``; shared with the embedder."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code, exc.message, exc.response.headers, exc.code
    return None


def openai_client_kwargs(api_key: str | None, base_url: str | None, timeout_s: float) -> dict[str, Any]:
    return {"api_key": api_key, "base_url": base_url or None, "max_retries": 0, "timeout": timeout_s}


def config_error(exc: Exception, provider: str) -> ConfigError:
    return ConfigError(f"{provider}: cannot build the client: {exc}", field="LLM_API_KEY")


class OpenAILLM(SDKChatLLM):
    provider = "openai"

    def __init__(self, model: str, *, api_key: str | None = None, base_url: str | None = None,
                 timeout_s: float = 60.0):
        import openai

        self.model = model
        try:
            self._client = openai.AsyncOpenAI(**openai_client_kwargs(api_key, base_url, timeout_s))
        except openai.OpenAIError as exc:
            raise config_error(exc, self.provider) from exc

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        return openai_status(exc)

    def _request(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "temperature": params.temperature,
                                "max_tokens": params.max_tokens,
                                "messages": [{"role": m.role, "content": m.content} for m in messages]}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.extra:
            body["extra_body"] = dict(params.extra)
        return body | timeout_kw(params) | request_id_kw()

    async def _complete(self, messages: Sequence[ChatMessage], params: GenerationParams
                        ) -> tuple[str, Usage, object]:
        response = await self._client.chat.completions.create(**self._request(messages, params))
        choice = response.choices[0]
        usage = response.usage
        return (choice.message.content or "",
                Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
                choice.finish_reason)

    async def _chunks(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        stream = await self._client.chat.completions.create(
            **self._request(messages, params), stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens) if chunk.usage else None
            choice = chunk.choices[0] if chunk.choices else None
            yield StreamChunk(delta=(choice.delta.content or "") if choice and choice.delta else "",
                              finish_reason=choice.finish_reason if choice else None, usage=usage)


@LLMS.register("openai")
def _create(model: str = "gpt-4o-mini", *, api_key: str | None = None, base_url: str | None = None,
            **options: Any) -> OpenAILLM:
    return OpenAILLM(model or "gpt-4o-mini", api_key=api_key, base_url=base_url,
                     timeout_s=float(options.get("timeout_s", 60.0)))
