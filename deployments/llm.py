"""One LLM deployment per configured provider; the router reaches them through handles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from ray.serve.exceptions import BackPressureError

from rag_ray.errors import ProviderRateLimited, RagError
from rag_ray.llm import LLM, ChatMessage, Completion, GenerationParams, StreamChunk
from rag_ray.providers.config import ProviderSpec, llm_entry


class LLMDeployment:
    def __init__(self, spec: ProviderSpec):
        self.llm: LLM = llm_entry(spec).backend

    def info(self) -> dict[str, str]:
        return {"provider": self.llm.provider, "model": self.llm.model}

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        return await self.llm.generate(messages, params)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        async for chunk in self.llm.stream(messages, params):
            yield chunk


def _unwrap(exc: BaseException, provider: str = "") -> BaseException:
    """Ray wraps replica exceptions; the manager's retry logic needs our own error types back.

    A full deployment queue is the provider saying "slow down": a rate limit the manager can retry or
    route around, and that ends as 503 + Retry-After if nothing else can serve."""
    if isinstance(exc, BackPressureError):
        return ProviderRateLimited(f"{provider} deployment queue is full", provider=provider,
                                   retry_after=exc.retry_after_s or 1.0)
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, RagError) else exc


class HandleLLM:
    """The LLM protocol over a handle to ``LLMDeployment``, so the library code stays Ray-free."""

    def __init__(self, handle: Any, provider: str, model: str):
        self.handle = handle
        self.provider, self.model = provider, model

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        try:
            return await self.handle.generate.remote(list(messages), params)
        except Exception as exc:
            raise _unwrap(exc, self.provider) from None

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        gen = self.handle.options(stream=True).stream.remote(list(messages), params)
        try:
            async for chunk in gen:
                yield chunk
        except Exception as exc:
            raise _unwrap(exc, self.provider) from None
        finally:
            gen.cancel()  # the client went away (or we are done): stop generating upstream
