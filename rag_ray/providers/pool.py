"""What the LLM and embedding managers share: entries with live stats, planning (priority tiers ordered by a
strategy, open circuits last), and the retry-then-fallback loop with breaker accounting."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rag_ray.errors import (
    ContextTooLong,
    InvalidInput,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)
from rag_ray.observability.deadline import check_deadline, current_deadline
from rag_ray.providers.breaker import BreakerState, CircuitBreaker, Clock
from rag_ray.providers.pricing import UNKNOWN, Price
from rag_ray.providers.retry import Deadline, RetryPolicy, Sleep, retry
from rag_ray.providers.strategies import STRATEGIES, Strategy

T = TypeVar("T")


class CircuitOpen(ProviderUnavailable):
    """This entry's breaker is open. Retriable (wait out the cooldown) only when no other entry is available."""

    code = "circuit_open"

    def __init__(self, message: str, *, retriable: bool, **kw: Any):
        super().__init__(message, **kw)
        self.retriable = retriable


@dataclass(eq=False)
class Entry:
    """One configured backend (``provider:model``) with its breaker and live statistics."""

    id: str
    weight: float = 1.0
    priority: int = 0
    price: Price = UNKNOWN
    max_context: int | None = None
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    in_flight: int = 0
    ewma_ms: float | None = None
    healthy: bool = True
    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def provider(self) -> str:
        return self.id.partition(":")[0]

    @property
    def model(self) -> str:
        return self.id.partition(":")[2]

    @property
    def breaker_state(self) -> BreakerState:
        return self.breaker.state

    @property
    def blended_price(self) -> float:
        return self.price.blended

    def observe_latency(self, ms: float, alpha: float) -> None:
        self.ewma_ms = ms if self.ewma_ms is None else alpha * ms + (1 - alpha) * self.ewma_ms

    def status(self) -> dict[str, Any]:
        return {"id": self.id, "provider": self.provider, "model": self.model, "priority": self.priority,
                "weight": self.weight, "breaker": self.breaker.snapshot(), "in_flight": self.in_flight,
                "ewma_latency_ms": None if self.ewma_ms is None else round(self.ewma_ms, 3),
                "healthy": self.healthy, "calls": self.calls, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6), "price_known": self.price.known,
                "max_context": self.max_context}


E = TypeVar("E", bound=Entry)


def _larger_context(candidate: Entry, failed: Entry) -> bool:
    if candidate.max_context is None:
        return False
    return failed.max_context is None or candidate.max_context > failed.max_context


class Pool(Generic[E]):
    """Entries + strategy + retry policy + breakers. ``run`` is the single fallback loop."""

    def __init__(self, entries: Sequence[E], *, strategy: str = "round_robin", policy: RetryPolicy | None = None,
                 default_deadline_s: float = 60.0, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 ewma_alpha: float = 0.2):
        if not entries:
            raise InvalidInput("at least one provider entry is required", field="providers")
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            raise InvalidInput(f"duplicate provider ids in {ids}", field="providers")
        self.entries = list(entries)
        self.default_strategy = strategy
        self.policy = policy or RetryPolicy()
        self.default_deadline_s = default_deadline_s
        self.clock = clock
        self.sleep = sleep
        self.ewma_alpha = ewma_alpha
        self._strategies: dict[str, Strategy] = {}
        self.strategy(strategy)  # fail fast on an unknown default

    # ---- planning ----
    def strategy(self, name: str | None) -> Strategy:
        name = name or self.default_strategy
        if name not in self._strategies:
            if name not in STRATEGIES.names():
                raise InvalidInput(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES.names())})",
                                   field="strategy")
            self._strategies[name] = STRATEGIES.create(name)
        return self._strategies[name]

    def use_strategy(self, strategy: Strategy) -> None:
        """Serve ``strategy.name`` with this instance (one that reads state from outside, e.g. ``quality``)."""
        self._strategies[strategy.name] = strategy

    def select(self, provider: str | None = None, model: str | None = None) -> list[E]:
        """Entries matching ``provider`` (a provider name or a full ``provider:model`` id) and ``model``."""
        chosen = [e for e in self.entries if provider in (None, e.provider, e.id) and model in (None, e.model)]
        if not chosen:
            raise InvalidInput(f"no configured provider matches provider={provider!r} model={model!r} "
                               f"(configured: {', '.join(e.id for e in self.entries)})", field="provider")
        return chosen

    def plan(self, strategy: str | None = None, provider: str | None = None, model: str | None = None) -> list[E]:
        """Priority tiers (lower number first), each ordered by the strategy; open circuits go last."""
        chooser = self.strategy(strategy)
        chosen = self.select(provider, model)
        ordered: list[E] = []
        for tier in sorted({e.priority for e in chosen}):
            members = [e for e in chosen if e.priority == tier]
            # one candidate needs no ordering: a call pinned to an entry must not advance a rotation
            ordered.extend(members if len(members) == 1 else chooser.order(members))
        return [e for e in ordered if e.breaker.allows()] + [e for e in ordered if not e.breaker.allows()]

    def deadline(self, deadline_s: float | None) -> Deadline:
        """``deadline_s`` (None: the pool's default), never past the deadline of the request being served."""
        seconds = self.default_deadline_s if deadline_s is None else deadline_s
        request = current_deadline()
        return Deadline(seconds if request is None else min(seconds, request.remaining()), self.clock)

    # ---- the loop ----
    async def run(self, order: list[E], call: Callable[[E], Awaitable[T]], deadline: Deadline) -> tuple[E, T]:
        """Try entries in order: each with retries (retriable errors), then fall back to the next.
        A context-window error only falls back to entries with a larger configured window."""
        errors: list[ProviderError] = []
        index = 0
        while index < len(order):
            entry, rest = order[index], order[index + 1:]
            try:
                result = await retry(functools.partial(self._attempt_on, entry, rest, call, deadline), self.policy,
                                     deadline=deadline, sleep=self.sleep)
                return entry, result
            except ContextTooLong as err:
                errors.append(err)
                check_deadline(f"waiting for {entry.id}")
                larger = [e for e in order[index + 1:] if _larger_context(e, entry)]
                if not larger:
                    raise
                order = [*order[:index + 1], *larger]
            except ProviderError as err:
                errors.append(err)
                check_deadline(f"waiting for {entry.id}")  # no fallback outlives the request
            index += 1
        raise self._unavailable(errors)

    @staticmethod
    def _unavailable(errors: list[ProviderError]) -> ProviderUnavailable:
        summary = "; ".join(f"{e.provider or '?'}: {e.code}" for e in errors[-8:])
        last = errors[-1] if errors else None
        return ProviderUnavailable(f"no provider could serve the request ({summary or 'none tried'})",
                                   retry_after=last.retry_after if last else None,
                                   details={"attempts": [e.to_dict() | {"provider": e.provider} for e in errors]})

    async def _attempt_on(self, entry: E, rest: list[E], call: Callable[[E], Awaitable[T]], deadline: Deadline,
                          attempt: int) -> T:
        return await self.attempt(entry, call, deadline, others=any(e.breaker.allows() for e in rest))

    async def attempt(self, entry: E, call: Callable[[E], Awaitable[T]], deadline: Deadline, *, others: bool) -> T:
        """One call on one entry: breaker gate, deadline, in-flight and latency accounting. A call cut short by the
        request's own deadline is the request's 504, not the provider's failure (its breaker is left alone)."""
        check_deadline(f"waiting for {entry.id}")
        if deadline.expired:
            raise ProviderTimeout(f"{entry.id}: deadline exceeded", provider=entry.id)
        if not entry.breaker.allows():
            raise CircuitOpen(f"{entry.id}: circuit open", provider=entry.id, retriable=not others,
                              retry_after=entry.breaker.remaining_cooldown())
        entry.in_flight += 1
        entry.calls += 1
        start = time.perf_counter()
        try:
            remaining = deadline.remaining()
            async with asyncio.timeout(remaining if math.isfinite(remaining) else None):
                result = await call(entry)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                check_deadline(f"waiting for {entry.id}")
            err = self.as_provider_error(exc, entry)
            self.record_failure(entry, err)
            raise err from exc
        finally:
            entry.in_flight -= 1
        self.record_success(entry, (time.perf_counter() - start) * 1000)
        return result

    @staticmethod
    def as_provider_error(exc: Exception, entry: Entry) -> ProviderError:
        if isinstance(exc, ProviderError):
            if not exc.provider or exc.provider == entry.provider:
                exc.provider = entry.id
            return exc
        if isinstance(exc, TimeoutError):
            return ProviderTimeout(f"{entry.id}: timed out (deadline)", provider=entry.id)
        # An unexpected exception from a backend (SDK bug, odd payload): treat as a server-side failure.
        return ProviderServerError(f"{entry.id}: {type(exc).__name__}: {exc}"[:2000], provider=entry.id)

    def record_success(self, entry: Entry, latency_ms: float) -> None:
        entry.breaker.record_success()
        entry.observe_latency(latency_ms, self.ewma_alpha)

    def record_failure(self, entry: Entry, err: ProviderError) -> None:
        entry.failures += 1
        if isinstance(err, ProviderRateLimited):
            cooldown = err.retry_after if err.retry_after is not None else entry.breaker.config.rate_limit_cooldown_s
            entry.breaker.trip(cooldown)
        elif err.retriable or isinstance(err, ProviderAuthError):
            entry.breaker.record_failure()

    def status(self) -> list[dict[str, Any]]:
        return [e.status() for e in self.entries]
