"""A scriptable LLM for tests: answers from a script or echoes, can delay, fail or stream slowly.

With ``context_window`` it behaves like the local model: a prompt whose tokens plus ``max_tokens`` exceed the window
raises ``ContextTooLong`` (details: ``prompt_tokens``, ``max_new_tokens``, ``context_window``). Its "tokenizer" is
one token per ``chars_per_token`` characters of each message plus a few per message (``prompt_tokens``), so a test
can make it count more tokens than the server's estimate. ``CountingFakeLLM`` also exposes that count
(``count_tokens``), like an adapter with a real tokenizer.

It records what cancellation does to it: ``active_generations`` (running now), ``cancelled`` (stopped by
cancellation) and ``params`` (each call's, with the ``timeout_s`` budget it was given).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from rag_ray.errors import ContextTooLong
from rag_ray.llm.base import LLMS, ChatMessage, Completion, GenerationParams, StreamChunk, Usage

Responder = Callable[[Sequence[ChatMessage]], str]


def echo_responder(messages: Sequence[ChatMessage]) -> str:
    return f"echo: {messages[-1].content[:200]}" if messages else "echo:"


class FakeLLM:
    def __init__(self, model: str = "echo", *, provider: str = "fake", responder: Responder | None = None,
                 delay_s: float = 0.0, token_delay_s: float = 0.0, fail_with: Exception | None = None,
                 context_window: int | None = None, chars_per_token: float = 4.0, serialize: bool = False):
        self.provider = provider
        self.model = model
        self.responder = responder or echo_responder
        self.delay_s = delay_s
        self.token_delay_s = token_delay_s
        self.fail_with = fail_with
        self.context_window = context_window
        self.chars_per_token = chars_per_token
        self.calls = 0
        self.prompts: list[list[ChatMessage]] = []  # every prompt that was accepted, in order
        self.params: list[GenerationParams] = []  # the params of every call, in order (``timeout_s``: its budget)
        self.active_generations = 0  # generations running now (a cancelled one stops counting once it has stopped)
        self.cancelled = 0  # generations stopped by cancellation (deadline, client gone)
        self._serial = asyncio.Lock() if serialize else None  # one generation at a time, like the local model

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(math.ceil(len(m.content) / self.chars_per_token) + 4 for m in messages) + 4

    def _check_window(self, messages: Sequence[ChatMessage], params: GenerationParams) -> None:
        if self.context_window is None:
            return
        length = self.prompt_tokens(messages)
        if length + params.max_tokens > self.context_window:
            raise ContextTooLong(f"prompt of {length} tokens + {params.max_tokens} new exceeds the "
                                 f"{self.context_window}-token window", provider=self.provider,
                                 details={"prompt_tokens": length, "max_new_tokens": params.max_tokens,
                                          "context_window": self.context_window})

    def _answer(self, messages: Sequence[ChatMessage], params: GenerationParams) -> tuple[str, Usage]:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        self._check_window(messages, params)
        self.prompts.append(list(messages))
        words = self.responder(messages).split(" ")[: max(1, params.max_tokens)]
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return " ".join(words), Usage(prompt_tokens, len(words))

    @contextlib.contextmanager
    def _active(self, params: GenerationParams) -> Iterator[None]:
        self.params.append(params)
        self.active_generations += 1
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        finally:
            self.active_generations -= 1

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        start = time.perf_counter()
        with self._active(params):
            async with self._serial or contextlib.nullcontext():
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                text, usage = self._answer(messages, params)
        return Completion(text=text, provider=self.provider, model=self.model, usage=usage,
                          latency_ms=(time.perf_counter() - start) * 1000)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        with self._active(params):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            text, usage = self._answer(messages, params)
            for i, word in enumerate(text.split(" ")):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield StreamChunk(delta=word if i == 0 else " " + word)
        yield StreamChunk(finish_reason="stop", usage=usage)


class CountingFakeLLM(FakeLLM):
    """A ``FakeLLM`` that also counts prompts with its "tokenizer", like the local model does."""

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.prompt_tokens(messages)


@LLMS.register("fake")
def _create(model: str = "echo", **options: object) -> FakeLLM:
    """``options`` may set ``delay_s`` / ``token_delay_s`` (e.g. from RAG_LLM_PROVIDERS) for load tests, and
    ``context_window`` and ``serialize`` (one generation at a time) to behave like a small local model."""
    window = options.get("context_window")
    return FakeLLM(model or "echo", delay_s=float(options.get("delay_s", 0.0) or 0.0),  # type: ignore[arg-type]
                   token_delay_s=float(options.get("token_delay_s", 0.0) or 0.0),  # type: ignore[arg-type]
                   context_window=int(window) if window else None,  # type: ignore[call-overload]
                   serialize=bool(options.get("serialize", False)))
