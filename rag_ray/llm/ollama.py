"""Ollama's /api/chat through the ollama SDK (``AsyncClient``; ``host`` = base_url, else OLLAMA_HOST).

Ollama runs a model with ``num_ctx`` tokens of context (2,048 unless the Modelfile or the request says otherwise)
and silently cuts longer prompts from the front. Option ``num_ctx`` (``RAG_LLM_PROVIDERS`` ``options``) is sent
with every request and reported as ``context_window``, so callers fit the prompt to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from rag_ray.llm.base import LLMS, ChatMessage, GenerationParams, StreamChunk, Usage
from rag_ray.llm.sdk import SDKChatLLM
from rag_ray.sdk.errors import StatusInfo

DEFAULT_MODEL = "llama3.2"


def ollama_status(exc: BaseException) -> StatusInfo | None:
    import ollama

    if isinstance(exc, ollama.ResponseError) and exc.status_code > 0:
        return exc.status_code, str(exc.error), None, None
    return None


class OllamaLLM(SDKChatLLM):
    provider = "ollama"

    def __init__(self, model: str = DEFAULT_MODEL, *, base_url: str | None = None, timeout_s: float = 120.0,
                 num_ctx: int | None = None):
        import ollama

        self.model = model
        self.num_ctx = num_ctx
        self._client = ollama.AsyncClient(host=base_url or None, timeout=timeout_s)

    @property
    def context_window(self) -> int | None:
        """``num_ctx`` when configured; None: the model's own default (see ``rag_ray.llm.windows``)."""
        return self.num_ctx

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        return ollama_status(exc)

    def _request(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        options: dict[str, Any] = {"temperature": params.temperature, "num_predict": params.max_tokens,
                                   **({"num_ctx": self.num_ctx} if self.num_ctx else {}), **params.extra}
        if params.stop:
            options["stop"] = list(params.stop)
        return {"model": self.model, "options": options,
                "messages": [{"role": m.role, "content": m.content} for m in messages]}

    @staticmethod
    def _usage(response: Any) -> Usage:
        return Usage(response.prompt_eval_count or 0, response.eval_count or 0)

    async def _complete(self, messages: Sequence[ChatMessage], params: GenerationParams
                        ) -> tuple[str, Usage, object]:
        response = await self._client.chat(**self._request(messages, params), stream=False)
        return response.message.content or "", self._usage(response), response.done_reason or "stop"

    async def _chunks(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        stream = await self._client.chat(**self._request(messages, params), stream=True)
        async for part in stream:
            done = bool(part.done)
            yield StreamChunk(delta=part.message.content or "" if part.message else "",
                              finish_reason=(part.done_reason or "stop") if done else None,
                              usage=self._usage(part) if done else None)


@LLMS.register("ollama")
def _create(model: str = DEFAULT_MODEL, *, base_url: str | None = None, **options: Any) -> OllamaLLM:
    num_ctx = options.get("num_ctx")
    return OllamaLLM(model or DEFAULT_MODEL, base_url=base_url, timeout_s=float(options.get("timeout_s", 120.0)),
                     num_ctx=int(num_ctx) if num_ctx else None)
