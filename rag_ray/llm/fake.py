"""A scriptable LLM for tests: answers from a script or echoes, can delay, fail or stream slowly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from rag_ray.llm.base import LLMS, ChatMessage, Completion, GenerationParams, StreamChunk, Usage

Responder = Callable[[Sequence[ChatMessage]], str]


def echo_responder(messages: Sequence[ChatMessage]) -> str:
    return f"echo: {messages[-1].content[:200]}" if messages else "echo:"


class FakeLLM:
    def __init__(self, model: str = "echo", *, provider: str = "fake", responder: Responder | None = None,
                 delay_s: float = 0.0, token_delay_s: float = 0.0, fail_with: Exception | None = None):
        self.provider = provider
        self.model = model
        self.responder = responder or echo_responder
        self.delay_s = delay_s
        self.token_delay_s = token_delay_s
        self.fail_with = fail_with
        self.calls = 0

    def _answer(self, messages: Sequence[ChatMessage], params: GenerationParams) -> tuple[str, Usage]:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        words = self.responder(messages).split(" ")[: max(1, params.max_tokens)]
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return " ".join(words), Usage(prompt_tokens, len(words))

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        start = time.perf_counter()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text, usage = self._answer(messages, params)
        return Completion(text=text, provider=self.provider, model=self.model, usage=usage,
                          latency_ms=(time.perf_counter() - start) * 1000)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text, usage = self._answer(messages, params)
        for i, word in enumerate(text.split(" ")):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            yield StreamChunk(delta=word if i == 0 else " " + word)
        yield StreamChunk(finish_reason="stop", usage=usage)


@LLMS.register("fake")
def _create(model: str = "echo", **options: object) -> FakeLLM:
    """``options`` may set ``delay_s`` / ``token_delay_s`` (e.g. from RAG_LLM_PROVIDERS) for load tests."""
    return FakeLLM(model or "echo", delay_s=float(options.get("delay_s", 0.0) or 0.0),  # type: ignore[arg-type]
                   token_delay_s=float(options.get("token_delay_s", 0.0) or 0.0))  # type: ignore[arg-type]
