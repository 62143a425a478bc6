"""One LLM deployment per configured provider; the router reaches them through handles.

Deadlines cross the handle as a budget: the router sends ``params.timeout_s`` (what the request has left) and the
wall-clock instant it sent the call. The replica does not start a call that waited in its queue past that budget, and
cancels one that runs past it; the router cancels the call (``DeploymentResponse.cancel``) when its own task is
cancelled — the request's deadline passed or its client went away — so the replica stops generating.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from deployments.handles import awaited, own_error
from deployments.resources import reserved_cpus
from rag_ray.errors import ProviderRateLimited, ProviderTimeout
from rag_ray.llm import LLM, ChatMessage, Completion, GenerationParams, StreamChunk
from rag_ray.llm.windows import CountsTokens, HasContextWindow
from rag_ray.providers.config import ProviderSpec, llm_entry


def sized_for_replica(spec: ProviderSpec, reserved: float) -> ProviderSpec:
    """A replica that reserves whole CPUs (serve_config.yaml: ``num_cpus: 1``) runs an in-process model on that many
    threads, as the embedder's do, so the replicas Ray packs onto a node never run more threads than it has cores; one
    that reserves a share keeps the model's default (every core). An explicit ``threads`` option wins; providers
    that run no model ignore it."""
    if reserved < 1 or "threads" in spec.options:
        return spec
    return spec.model_copy(update={"options": {**spec.options, "threads": int(reserved)}})


class LLMDeployment:
    def __init__(self, spec: ProviderSpec):
        self.spec = sized_for_replica(spec, reserved_cpus())
        self.llm: LLM = llm_entry(self.spec).backend

    def info(self) -> dict[str, Any]:
        """Who serves, and what the router may ask besides generating (its window, its tokenizer)."""
        window = self.llm.context_window if isinstance(self.llm, HasContextWindow) else None
        return {"provider": self.llm.provider, "model": self.llm.model, "context_window": window,
                "counts_tokens": isinstance(self.llm, CountsTokens)}

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        assert isinstance(self.llm, CountsTokens)
        return await self.llm.count_tokens(messages)

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams,
                       sent_at: float | None = None) -> Completion:
        budget = self._budget(params, sent_at)
        try:
            async with asyncio.timeout(budget):
                return await self.llm.generate(messages, dataclasses.replace(params, timeout_s=budget))
        except TimeoutError:
            raise ProviderTimeout(f"{self._id}: did not finish within its caller's {budget:.3g}s budget",
                                  provider=self.llm.provider) from None

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams,
                     sent_at: float | None = None) -> AsyncIterator[StreamChunk]:
        budget = self._budget(params, sent_at)
        async for chunk in self.llm.stream(messages, dataclasses.replace(params, timeout_s=budget)):
            yield chunk

    def _budget(self, params: GenerationParams, sent_at: float | None) -> float | None:
        """What is left of the caller's budget after the queue; a call whose caller has given up is not started."""
        if params.timeout_s is None or sent_at is None:
            return params.timeout_s
        left = params.timeout_s - max(0.0, time.time() - sent_at)
        if left <= 0:
            raise ProviderTimeout(f"{self._id}: waited {params.timeout_s:.3g}s in the queue; not started (its "
                                  "caller's deadline passed)", provider=self.llm.provider)
        return left

    @property
    def _id(self) -> str:
        return f"{self.llm.provider}:{self.llm.model}"


def _unwrap(exc: BaseException, provider: str = "") -> BaseException:
    """Ray wraps replica exceptions; the manager's retry logic needs our own error types back.

    A full deployment queue is the provider saying "slow down": a rate limit the manager can retry or
    route around, and that ends as 503 + Retry-After if nothing else can serve."""
    return own_error(exc, lambda retry_after: ProviderRateLimited(f"{provider} deployment queue is full",
                                                                  provider=provider, retry_after=retry_after))


class HandleLLM:
    """The LLM protocol over a handle to ``LLMDeployment``, so the library code stays Ray-free."""

    def __init__(self, handle: Any, provider: str, model: str):
        self.handle = handle
        self.provider, self.model = provider, model

    def _unwrap(self, exc: BaseException) -> BaseException:
        return _unwrap(exc, self.provider)

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        result: Completion = await awaited(self.handle.generate.remote(list(messages), params, time.time()),
                                           self._unwrap)
        return result

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        gen = self.handle.options(stream=True).stream.remote(list(messages), params, time.time())
        try:
            async for chunk in gen:
                yield chunk
        except Exception as exc:
            raise self._unwrap(exc) from None
        finally:
            gen.cancel()  # the client went away (or we are done): stop generating upstream


class WindowedHandleLLM(HandleLLM):
    """A ``HandleLLM`` whose deployment knows its window and counts tokens with its own tokenizer (the local model):
    both are forwarded, so prompts are fitted to it exactly, as in-process."""

    def __init__(self, handle: Any, provider: str, model: str, context_window: int | None):
        super().__init__(handle, provider, model)
        self._context_window = context_window

    @property
    def context_window(self) -> int | None:
        return self._context_window

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        count: int = await awaited(self.handle.count_tokens.remote(list(messages)), self._unwrap)
        return count


def handle_llm(handle: Any, provider: str, model: str, info: dict[str, Any] | None) -> HandleLLM:
    """The right handle adapter for a deployment, from its ``info`` (None: not asked; a plain one)."""
    if info and info.get("counts_tokens"):
        return WindowedHandleLLM(handle, provider, model, info.get("context_window"))
    return HandleLLM(handle, provider, model)
