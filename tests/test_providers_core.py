"""Breaker, retry loop, strategies and pricing: pure logic with an injected clock, sleep and RNG."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from rag_ray.errors import ProviderBadRequest, ProviderRateLimited, ProviderServerError
from rag_ray.llm.base import Usage
from rag_ray.providers.breaker import BreakerConfig, BreakerState, CircuitBreaker
from rag_ray.providers.pricing import price_for
from rag_ray.providers.retry import Deadline, RetryPolicy, retry
from rag_ray.providers.strategies import STRATEGIES, create_strategy
from rag_ray.sdk.errors import error_for_status, parse_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# ---- breaker ----
def test_breaker_opens_after_n_failures_within_window_then_half_open_then_closed() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=3, window_s=10, cooldown_s=5, success_threshold=2),
                             clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allows()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allows()
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_breaker_failures_outside_window_do_not_count() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=2, window_s=10), clock=clock)
    breaker.record_failure()
    clock.now += 11
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_breaker_half_open_failure_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown_s=5), clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.remaining_cooldown() == pytest.approx(5)


def test_rate_limit_trip_uses_retry_after_as_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(cooldown_s=30), clock=clock)
    breaker.trip(0.5)
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.5
    assert breaker.state is BreakerState.HALF_OPEN


# ---- retry ----
@dataclass
class Flaky:
    failures: list[Exception]
    calls: int = 0

    async def __call__(self, attempt: int) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_retry_retries_only_retriable_errors_with_jittered_backoff() -> None:
    clock = FakeClock()
    flaky = Flaky([ProviderServerError("a"), ProviderServerError("b")])
    policy = RetryPolicy(max_retries=3, base_delay_s=1.0, rng=random.Random(1))
    assert asyncio.run(retry(flaky, policy, deadline=Deadline(60, clock), sleep=clock.sleep)) == "ok"
    assert flaky.calls == 3
    assert all(0 <= s <= 1.0 * 2 ** i for i, s in enumerate(clock.sleeps))

    bad = Flaky([ProviderBadRequest("no")])
    with pytest.raises(ProviderBadRequest):
        asyncio.run(retry(bad, policy, deadline=Deadline(60, clock), sleep=clock.sleep))
    assert bad.calls == 1


def test_retry_honours_retry_after_and_max_retries() -> None:
    clock = FakeClock()
    flaky = Flaky([ProviderRateLimited("slow", retry_after=2.5)] * 5)
    with pytest.raises(ProviderRateLimited):
        asyncio.run(retry(flaky, RetryPolicy(max_retries=2, base_delay_s=0.01), deadline=Deadline(60, clock),
                          sleep=clock.sleep))
    assert flaky.calls == 3
    assert clock.sleeps == [2.5, 2.5]


def test_retry_stops_when_the_wait_would_cross_the_deadline() -> None:
    clock = FakeClock()
    flaky = Flaky([ProviderRateLimited("slow", retry_after=30)])
    with pytest.raises(ProviderRateLimited):
        asyncio.run(retry(flaky, RetryPolicy(), deadline=Deadline(10, clock), sleep=clock.sleep))
    assert flaky.calls == 1 and clock.sleeps == []


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=4, rng=random.Random(0))
    delays = [policy.backoff(10) for _ in range(200)]
    assert max(delays) <= 4 and min(delays) >= 0 and len(set(delays)) > 100


# ---- error mapping ----
def test_retry_after_header_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480) == 10
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


@pytest.mark.parametrize(("status", "code", "name"), [
    (400, None, "ProviderBadRequest"), (400, "context_length_exceeded", "ContextTooLong"),
    (401, None, "ProviderAuthError"), (403, None, "ProviderAuthError"), (408, None, "ProviderTimeout"),
    (429, None, "ProviderRateLimited"), (500, None, "ProviderServerError"), (529, None, "ProviderServerError"),
    (504, None, "ProviderTimeout")])
def test_status_table(status: int, code: str | None, name: str) -> None:
    assert type(error_for_status(status, "m", provider="p", code=code)).__name__ == name


# ---- strategies ----
@dataclass
class Cand:
    id: str
    weight: float = 1.0
    in_flight: int = 0
    ewma_ms: float | None = None
    breaker_state: BreakerState = BreakerState.CLOSED
    healthy: bool = True
    blended_price: float = 0.0


def test_registry_has_all_strategies() -> None:
    assert {"round_robin", "random", "least_loaded", "latency_based", "health_based",
            "cost_optimized"} <= set(STRATEGIES.names())


def test_round_robin_rotates() -> None:
    rr = create_strategy("round_robin")
    cands = [Cand("a"), Cand("b"), Cand("c")]
    assert [rr.order(cands)[0].id for _ in range(4)] == ["a", "b", "c", "a"]


def test_weighted_random_follows_weights() -> None:
    strategy = create_strategy("random", rng=random.Random(7))
    cands = [Cand("heavy", weight=9), Cand("light", weight=1)]
    firsts = [strategy.order(cands)[0].id for _ in range(1000)]
    assert 850 < firsts.count("heavy") < 950


def test_least_loaded_latency_health_cost() -> None:
    cands = [Cand("a", in_flight=5, ewma_ms=50, blended_price=3.0),
             Cand("b", in_flight=1, ewma_ms=200, breaker_state=BreakerState.HALF_OPEN, blended_price=0.1),
             Cand("c", in_flight=3, ewma_ms=10, healthy=False, blended_price=1.0)]
    assert [c.id for c in create_strategy("least_loaded").order(cands)] == ["b", "c", "a"]
    assert [c.id for c in create_strategy("latency_based").order(cands)] == ["c", "a", "b"]
    assert [c.id for c in create_strategy("health_based").order(cands)] == ["a", "c", "b"]
    assert [c.id for c in create_strategy("cost_optimized").order(cands)] == ["b", "c", "a"]
    assert create_strategy("latency_based").order([Cand("m", ewma_ms=5), Cand("new")])[0].id == "new"


# ---- pricing ----
def test_pricing_table_overrides_and_unknown() -> None:
    usage = Usage(1_000_000, 500_000)
    assert price_for("openai:gpt-4o-mini").cost(usage) == pytest.approx(0.15 + 0.30)
    assert price_for("x:y", input_price=1, output_price=2).cost(usage) == pytest.approx(2.0)
    unknown = price_for("acme:mystery")
    assert unknown.cost(usage) == 0 and not unknown.known
    assert price_for("ollama:llama3.2").known and price_for("ollama:llama3.2").cost(usage) == 0
