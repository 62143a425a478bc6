"""Fit a prompt to the serving model's window, and refit when the model counted more than we did.

One algorithm for every RAG answer (``/query``, ``/generate/*``, ``/v1`` ``model: rag``):

1. The bare prompt (system prompt, template, instructions and the user's question, no passages) is counted with
   the model's tokenizer or its estimate (``WindowSpec.count``). If that alone leaves no room for an answer
   (``MIN_ANSWER_TOKENS``), the user's own input is too long: ``InvalidInput`` naming the field (422).
2. ``max_tokens`` is kept when it fits. Otherwise it is shrunk, and reported (``WindowFit.max_tokens`` below
   ``max_tokens_requested``), so that the passages keep at least a quarter of the room.
3. The passages get the rest: best-ranked first, the next one trimmed, lower-ranked ones dropped (``fit_to_budget``
   with the model's estimate).
4. The finished prompt is counted again; if it is over, the passage budget shrinks in proportion and the prompt is
   rebuilt (``MAX_REFITS``), falling back to the bare prompt, which fits by step 1.
5. ``fitted_call`` sends it. If the model still refuses it (``ContextTooLong``: the estimate was low), the estimate
   is calibrated from the model's own count and the prompt refitted (``MAX_CALIBRATIONS``, the last one without
   passages). Only a refused bare prompt is the user's fault (``InvalidInput``). Any other provider failure moves
   on to the next target (the manager's failover order), refitted to that target's own window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rag_ray.errors import ContextTooLong, InvalidInput, ProviderError, ProviderUnavailable
from rag_ray.generation.context import chunk_cost
from rag_ray.generation.prompts import EngineeredPrompt, PromptEngineer, PromptRequest
from rag_ray.llm.base import GenerationParams
from rag_ray.llm.windows import WindowSpec

T = TypeVar("T")

MIN_ANSWER_TOKENS = 16
CONTEXT_SHARE = 4  # when max_tokens must shrink, the passages keep at least 1/CONTEXT_SHARE of the room
MAX_REFITS = 3
MAX_CALIBRATIONS = 2
UNKNOWN_OVERSHOOT = 1.5  # estimate correction when the model refused without saying its count


@dataclass(frozen=True)
class Target:
    """Where a prompt goes: a provider id for the source (None: its default) and that provider's window."""

    provider: str | None
    window: WindowSpec


@dataclass(frozen=True)
class WindowFit:
    """How a prompt was fitted: to which window, counted how, and the answer length it leaves."""

    provider: str
    context_window: int
    window_source: str
    counted_with: str
    prompt_tokens: int
    max_tokens: int
    max_tokens_requested: int
    refits: int = 0
    calibrations: int = 0


@dataclass(frozen=True)
class FittedPrompt:
    prompt: EngineeredPrompt
    fit: WindowFit

    @property
    def used_ids(self) -> list[str]:
        """Chunk ids in the prompt, in citation-number order ([1] first)."""
        return [u.chunk.id for u in self.prompt.context.used]

    @property
    def dropped_ids(self) -> list[str]:
        return list(self.prompt.context.dropped_ids)

    @property
    def truncated_ids(self) -> list[str]:
        return [u.chunk.id for u in self.prompt.context.used if u.truncated]

    def params(self, temperature: float, stop: Sequence[str] = (), extra: dict[str, Any] | None = None
               ) -> GenerationParams:
        return GenerationParams(temperature=temperature, max_tokens=self.fit.max_tokens, stop=tuple(stop),
                                extra=dict(extra or {}))


@dataclass(frozen=True)
class PromptFitter:
    """One question's prompt, fitted on demand to a window (``fit``). ``field`` names the request field holding the
    user's text, for the 422 when that alone is too long."""

    engineer: PromptEngineer
    request: PromptRequest
    strategy: str
    injection: str | None
    max_tokens: int
    field: str = "query"

    async def fit(self, window: WindowSpec, *, passages: bool = True, calibrations: int = 0) -> FittedPrompt:
        bare = self._build(window, 0)
        bare_tokens = await window.count(bare.messages)
        room = window.tokens - window.margin - bare_tokens  # for the passages and the answer
        if room < MIN_ANSWER_TOKENS:
            raise self.too_long(window, bare_tokens)
        answer = self._answer_tokens(room, window)
        budget = room - answer if passages and self.request.contexts else 0
        refits = 0
        while budget > 0 and refits <= MAX_REFITS:
            prompt = self._build(window, budget)
            tokens = await window.count(prompt.messages)
            if tokens + answer + window.margin <= window.tokens:
                return self._fitted(prompt, tokens, answer, window, refits, calibrations)
            budget = int(budget * (room - answer) / (tokens - bare_tokens) * 0.95)
            refits += 1
        return self._fitted(bare, bare_tokens, answer, window, refits, calibrations)

    def too_long(self, window: WindowSpec, tokens: int) -> InvalidInput:
        return InvalidInput(
            f"{self.field} is too long: with the prompt around it, it takes ~{tokens} of the {window.tokens}-token "
            f"window of {window.provider_id} and leaves no room for an answer", field=self.field,
            details={"prompt_tokens": tokens, "context_window": window.tokens, "provider": window.provider_id})

    def _build(self, window: WindowSpec, budget: int) -> EngineeredPrompt:
        return self.engineer.build(self.request, self.strategy, self.injection, max_tokens=self.max_tokens,
                                   budget=budget, estimate=window.estimate)

    def _answer_tokens(self, room: int, window: WindowSpec) -> int:
        wanted = sum(chunk_cost(c.text, window.estimate) for c in self.request.contexts)
        floor = min(wanted, room // CONTEXT_SHARE)
        return min(self.max_tokens, max(room - floor, MIN_ANSWER_TOKENS))

    def _fitted(self, prompt: EngineeredPrompt, tokens: int, answer: int, window: WindowSpec, refits: int,
                calibrations: int) -> FittedPrompt:
        return FittedPrompt(prompt, WindowFit(
            provider=window.provider_id, context_window=window.tokens, window_source=window.source,
            counted_with=window.counted_with, prompt_tokens=tokens, max_tokens=answer,
            max_tokens_requested=self.max_tokens, refits=refits, calibrations=calibrations))


def calibrate(window: WindowSpec, err: ContextTooLong, counted: int) -> WindowSpec:
    """``window`` corrected after the model refused a prompt we counted as ``counted`` tokens: its own window and
    count (``details`` of the local model's error) when given, else a fixed overshoot."""
    details = err.details or {}
    real, reported = details.get("prompt_tokens"), details.get("context_window")
    if isinstance(reported, int) and 0 < reported < window.tokens:
        window = dataclasses.replace(window, tokens=reported)
    if window.counter is not None:  # the tokenizer was off (or is not the one serving): keep a wider margin
        over = real - counted if isinstance(real, int) and real > counted else window.tokens // 8
        return dataclasses.replace(window, tokens=max(1, window.tokens - over - window.margin))
    factor = real / counted * 1.05 if isinstance(real, int) and counted > 0 else UNKNOWN_OVERSHOOT
    return window.scaled(max(factor, 1.1))


async def fitted_call(fitter: PromptFitter, targets: Sequence[Target],
                      call: Callable[[FittedPrompt, Target], Awaitable[T]]) -> tuple[FittedPrompt, T]:
    """Fit and send to the first target; on a provider failure move on to the next (each refitted to its window).
    Context the server added never fails the call: ``ContextTooLong`` leads to a smaller refit."""
    errors: list[ProviderError] = []
    for target in targets:
        try:
            return await _calibrated(fitter, target, call)
        except ProviderError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    last = errors[-1] if errors else None
    summary = "; ".join(f"{e.provider or '?'}: {e.code}" for e in errors)
    raise ProviderUnavailable(f"no provider could serve the request ({summary or 'none configured'})",
                              retry_after=last.retry_after if last else None)


async def _calibrated(fitter: PromptFitter, target: Target,
                      call: Callable[[FittedPrompt, Target], Awaitable[T]]) -> tuple[FittedPrompt, T]:
    window = target.window
    for attempt in range(MAX_CALIBRATIONS + 1):
        fitted = await fitter.fit(window, passages=attempt < MAX_CALIBRATIONS, calibrations=attempt)
        try:
            return fitted, await call(fitted, target)
        except ContextTooLong as err:
            if attempt == MAX_CALIBRATIONS:
                raise fitter.too_long(window, _reported(err, fitted.fit.prompt_tokens)) from err
            window = calibrate(window, err, fitted.fit.prompt_tokens)
    raise AssertionError("unreachable")


def _reported(err: ContextTooLong, fallback: int) -> int:
    real = (err.details or {}).get("prompt_tokens")
    return real if isinstance(real, int) else fallback


def smallest(windows: Sequence[WindowSpec]) -> WindowSpec:
    """The binding window of several candidates (an ensemble shares one prompt)."""
    return min(windows, key=lambda w: w.tokens)
