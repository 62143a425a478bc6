"""Anthropic Messages API through the official SDK (SDK retries off: only the manager retries).

The installed SDK (2.x) no longer types ``temperature``: it is sent through ``extra_body`` only when
``send_temperature=True`` (option ``send_temperature``), for models/gateways that still accept it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from rag_ray.errors import ConfigError
from rag_ray.llm.base import LLMS, ChatMessage, GenerationParams, StreamChunk, Usage
from rag_ray.llm.sdk import SDKChatLLM, request_id_kw, split_system, timeout_kw
from rag_ray.sdk.errors import StatusInfo

DEFAULT_MODEL = "claude-3-5-haiku-latest"


class AnthropicLLM(SDKChatLLM):
    provider = "anthropic"

    def __init__(self, model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
                 timeout_s: float = 60.0, send_temperature: bool = False):
        import anthropic

        self.model = model
        self.send_temperature = send_temperature
        try:
            self._client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url or None, max_retries=0,
                                                    timeout=timeout_s)
        except (anthropic.AnthropicError, ValueError) as exc:
            raise ConfigError(f"anthropic: cannot build the client: {exc}", field="LLM_API_KEY") from exc

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        import anthropic

        if isinstance(exc, anthropic.APIStatusError):
            return exc.status_code, exc.api_message or exc.message, exc.response.headers, exc.type
        return None

    def _request(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        system, turns = split_system(messages)
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens,
                                "messages": [{"role": m.role, "content": m.content} for m in turns]}
        if system:
            body["system"] = system
        if params.stop:
            body["stop_sequences"] = list(params.stop)
        extra = ({"temperature": params.temperature} if self.send_temperature else {}) | dict(params.extra)
        if extra:
            body["extra_body"] = extra
        return body | timeout_kw(params) | request_id_kw()

    async def _complete(self, messages: Sequence[ChatMessage], params: GenerationParams
                        ) -> tuple[str, Usage, object]:
        message = await self._client.messages.create(**self._request(messages, params))
        text = "".join(getattr(block, "text", "") for block in message.content)
        return text, Usage(message.usage.input_tokens, message.usage.output_tokens), message.stop_reason

    async def _chunks(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        stream = await self._client.messages.create(**self._request(messages, params), stream=True)
        usage = Usage()
        stop_reason: str | None = None
        async for event in stream:
            kind = event.type
            if kind == "message_start":
                usage.prompt_tokens = event.message.usage.input_tokens
            elif kind == "content_block_delta" and getattr(event.delta, "text", None):
                yield StreamChunk(delta=event.delta.text)
            elif kind == "message_delta":
                stop_reason = event.delta.stop_reason or "stop"
                usage.completion_tokens = event.usage.output_tokens
                usage.prompt_tokens = event.usage.input_tokens or usage.prompt_tokens
            elif kind == "message_stop":
                yield StreamChunk(finish_reason=stop_reason or "stop", usage=usage)


@LLMS.register("anthropic")
def _create(model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
            **options: Any) -> AnthropicLLM:
    return AnthropicLLM(model or DEFAULT_MODEL, api_key=api_key, base_url=base_url,
                        timeout_s=float(options.get("timeout_s", 60.0)),
                        send_temperature=bool(options.get("send_temperature", False)))
