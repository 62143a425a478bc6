"""One LLM deployment per configured provider; the router reaches them through handles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from ray import serve

from rag_ray.config import Settings
from rag_ray.llm import LLM, ChatMessage, Completion, GenerationParams, StreamChunk, create_llm


class LLMDeployment:
    def __init__(self, settings: Settings, provider: str | None = None, model: str | None = None):
        self.llm: LLM = create_llm(settings, provider, model)

    def info(self) -> dict[str, str]:
        return {"provider": self.llm.provider, "model": self.llm.model}

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        return await self.llm.generate(messages, params)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        async for chunk in self.llm.stream(messages, params):
            yield chunk

    async def check_health(self) -> None:  # Serve calls this periodically; raising marks the replica unhealthy
        return None


class HandleLLM:
    """The LLM protocol over a handle to ``LLMDeployment``, so the library code stays Ray-free."""

    def __init__(self, handle: serve.handle.DeploymentHandle, info: dict[str, str]):
        self.handle = handle
        self.provider, self.model = info["provider"], info["model"]

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        return await self.handle.generate.remote(list(messages), params)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        gen = self.handle.options(stream=True).stream.remote(list(messages), params)
        try:
            async for chunk in gen:
                yield chunk
        finally:
            gen.cancel()  # the client went away: stop generating upstream
