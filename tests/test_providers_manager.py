"""LLMManager / EmbeddingManager: retries seen by the fake servers, fallback order, breakers, streaming
failover, cost, embedding cache, configuration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import (
    ConfigError,
    ContextTooLong,
    InvalidInput,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderUnavailable,
)
from rag_ray.llm.base import ChatMessage, GenerationParams, StreamChunk, as_messages
from rag_ray.llm.fake import FakeLLM
from rag_ray.llm.openai import OpenAILLM
from rag_ray.providers import (
    BreakerConfig,
    CircuitBreaker,
    EmbedderEntry,
    EmbeddingManager,
    LLMEntry,
    LLMManager,
    Price,
    ProviderSpec,
    RetryPolicy,
    build_embedding_manager,
    build_llm_manager,
)
from rag_ray.testing import FakeOpenAIServer

MSGS = as_messages("hello world")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def manager(*entries: LLMEntry, clock: FakeClock | None = None, retries: int = 2, **kw: object) -> LLMManager:
    clock = clock or FakeClock()
    return LLMManager(list(entries), policy=RetryPolicy(max_retries=retries, base_delay_s=0.01), clock=clock,
                      sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def entry(llm: FakeLLM, clock: FakeClock | None = None, **kw: object) -> LLMEntry:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=3, cooldown_s=30), clock=clock or FakeClock())
    return LLMEntry.of(llm, breaker=breaker, **kw)  # type: ignore[arg-type]


# ---- retries and fallback against the fake OpenAI server (counts what the wire saw) ----
def test_retries_are_counted_by_the_server_and_then_succeed() -> None:
    with FakeOpenAIServer() as server:
        server.fail(2, 500)
        clock = FakeClock()
        llm = OpenAILLM("gpt-4o-mini", api_key="k", base_url=server.base_url)
        mgr = manager(LLMEntry.of(llm), clock=clock, retries=3)
        completion = asyncio.run(mgr.generate(MSGS))
        assert completion.text == server.text
        assert server.count("/chat/completions") == 3  # exactly 1 + 2 retries: no nested SDK retries
        assert len(clock.sleeps) == 2


def test_retries_exhausted_then_fallback_to_next_priority() -> None:
    with FakeOpenAIServer() as primary, FakeOpenAIServer(text="from backup") as backup:
        primary.fail(10, 503)
        mgr = manager(LLMEntry.of(OpenAILLM("a", api_key="k", base_url=primary.base_url), priority=0),
                      LLMEntry.of(OpenAILLM("b", api_key="k", base_url=backup.base_url), priority=1), retries=2)
        completion = asyncio.run(mgr.generate(MSGS))
        assert completion.text == "from backup" and completion.model == "b"
        assert primary.count("/chat/completions") == 3 and backup.count("/chat/completions") == 1


def test_rate_limit_on_the_only_provider_is_retried_within_the_deadline() -> None:
    with FakeOpenAIServer() as server:
        server.fail(1, 429, retry_after=0.05)
        mgr = LLMManager([LLMEntry.of(OpenAILLM("m", api_key="k", base_url=server.base_url))],
                         policy=RetryPolicy(max_retries=3, base_delay_s=0.001))
        completion = asyncio.run(mgr.generate(MSGS, deadline_s=5))
        assert completion.text == server.text
        assert server.count("/chat/completions") == 2
        assert mgr.status()["entries"][0]["breaker"]["state"] in {"half_open", "closed"}


def test_rate_limit_fails_over_immediately_when_another_provider_is_up() -> None:
    with FakeOpenAIServer() as a, FakeOpenAIServer(text="b answered") as b:
        a.fail(1, 429, retry_after=30)
        mgr = manager(LLMEntry.of(OpenAILLM("a", api_key="k", base_url=a.base_url), priority=0),
                      LLMEntry.of(OpenAILLM("b", api_key="k", base_url=b.base_url), priority=1))
        assert asyncio.run(mgr.generate(MSGS)).text == "b answered"
        assert a.count() == 1 and b.count() == 1
        assert mgr.entry("openai:a").breaker.state.value == "open"
        assert asyncio.run(mgr.generate(MSGS)).text == "b answered"  # a is skipped while open
        assert a.count() == 1


def test_auth_error_is_not_retried_but_falls_back() -> None:
    bad = FakeLLM("bad", fail_with=ProviderAuthError("no key"))
    good = FakeLLM("good")
    mgr = manager(entry(bad, priority=0), entry(good, priority=1))
    assert asyncio.run(mgr.generate(MSGS)).model == "good"
    assert bad.calls == 1


def test_all_providers_down_raises_unavailable_in_bounded_time() -> None:
    with FakeOpenAIServer(delay_s=0.5) as slow:
        dead = FakeLLM("dead", fail_with=ProviderConnectionError("refused"))
        mgr = LLMManager([LLMEntry.of(dead), LLMEntry.of(OpenAILLM("slow", api_key="k", base_url=slow.base_url))],
                         policy=RetryPolicy(max_retries=1, base_delay_s=0.001))
        with pytest.raises(ProviderUnavailable) as info:
            asyncio.run(mgr.generate(MSGS, deadline_s=0.2))
        assert info.value.details["attempts"]


def test_context_error_falls_back_to_a_larger_window_only() -> None:
    small = FakeLLM("small", fail_with=ContextTooLong("too long"))
    same = FakeLLM("same")
    big = FakeLLM("big")
    mgr = manager(entry(small, priority=0, max_context=8000), entry(same, priority=1, max_context=8000),
                  entry(big, priority=2, max_context=128000))
    assert asyncio.run(mgr.generate(MSGS)).model == "big"
    assert small.calls == 1 and same.calls == 0

    only = manager(entry(FakeLLM("x", fail_with=ContextTooLong("too long")), max_context=8000))
    with pytest.raises(ContextTooLong):
        asyncio.run(only.generate(MSGS))


def test_breaker_opens_after_failures_and_recovers_through_half_open() -> None:
    clock = FakeClock()
    flaky = FakeLLM("flaky", fail_with=ProviderServerError("500"))
    backup = FakeLLM("backup")
    mgr = manager(entry(flaky, clock, priority=0), entry(backup, clock, priority=1), clock=clock, retries=0)
    for _ in range(3):
        asyncio.run(mgr.generate(MSGS))
    flaky_entry = mgr.entry("fake:flaky")
    assert flaky_entry.breaker.state.value == "open"
    calls = flaky.calls
    asyncio.run(mgr.generate(MSGS))
    assert flaky.calls == calls  # skipped while open
    clock.now += 30
    flaky.fail_with = None
    for _ in range(2):
        assert asyncio.run(mgr.generate(MSGS)).model == "flaky"
    assert flaky_entry.breaker.state.value == "closed"


def test_provider_and_model_selection_and_unknown_strategy() -> None:
    mgr = manager(entry(FakeLLM("a")), entry(FakeLLM("b")))
    assert asyncio.run(mgr.generate(MSGS, model="b")).model == "b"
    assert asyncio.run(mgr.generate(MSGS, provider="fake:a")).model == "a"
    with pytest.raises(InvalidInput):
        asyncio.run(mgr.generate(MSGS, provider="openai"))
    with pytest.raises(InvalidInput):
        asyncio.run(mgr.generate(MSGS, strategy="nope"))


def test_round_robin_spreads_calls_and_cost_is_accounted() -> None:
    a, b = FakeLLM("a"), FakeLLM("b")
    mgr = manager(entry(a, price=Price(1_000_000, 2_000_000)), entry(b, price=Price(0, 0)))
    results = [asyncio.run(mgr.generate(MSGS)) for _ in range(4)]
    assert a.calls == 2 and b.calls == 2
    paid = next(r for r in results if r.model == "a")
    assert paid.cost_usd == pytest.approx(paid.usage.prompt_tokens * 1 + paid.usage.completion_tokens * 2)
    status = mgr.status()
    assert status["total_cost_usd"] == pytest.approx(2 * paid.cost_usd)
    assert {e["id"] for e in status["entries"]} == {"fake:a", "fake:b"}


def test_least_loaded_prefers_idle_entry() -> None:
    async def run() -> list[str]:
        busy, idle = FakeLLM("busy", delay_s=0.2), FakeLLM("idle")
        mgr = LLMManager([LLMEntry.of(busy), LLMEntry.of(idle)], strategy="least_loaded")
        first = asyncio.create_task(mgr.generate(MSGS, model="busy"))
        await asyncio.sleep(0.05)
        second = await mgr.generate(MSGS)
        await first
        return [second.model]

    assert asyncio.run(run()) == ["idle"]


def test_health_check_marks_entries() -> None:
    mgr = manager(entry(FakeLLM("ok")), entry(FakeLLM("down", fail_with=ProviderConnectionError("x"))))
    assert asyncio.run(mgr.check_health()) == {"fake:ok": True, "fake:down": False}
    assert [e.id for e in mgr.pool.plan("health_based")] == ["fake:ok", "fake:down"]


# ---- streaming ----
class BreaksAfter:
    """Streams ``good`` chunks then raises."""

    provider, model = "fake", "breaks"

    def __init__(self, good: int, error: Exception):
        self.good, self.error, self.calls = good, error, 0

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> None:
        raise self.error

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        self.calls += 1
        for i in range(self.good):
            yield StreamChunk(delta=f"t{i} ")
        raise self.error


async def _collect(stream: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


def test_stream_fails_over_transparently_before_first_token() -> None:
    broken = BreaksAfter(0, ProviderConnectionError("reset"))
    good = FakeLLM("good")
    mgr = manager(LLMEntry.of(broken, priority=0), entry(good, priority=1), retries=1)  # type: ignore[arg-type]
    chunks = asyncio.run(_collect(mgr.stream(MSGS)))
    assert "".join(c.delta for c in chunks) == "echo: hello world"
    assert chunks[-1].finish_reason == "stop"
    assert broken.calls == 2


def test_stream_after_first_token_ends_with_error_chunk_and_exception() -> None:
    broken = BreaksAfter(2, ProviderConnectionError("reset"))
    good = FakeLLM("good")
    mgr = manager(LLMEntry.of(broken, priority=0), entry(good, priority=1))  # type: ignore[arg-type]
    seen: list[StreamChunk] = []

    async def consume() -> None:
        async for chunk in mgr.stream(MSGS):
            seen.append(chunk)

    with pytest.raises(ProviderConnectionError) as info:
        asyncio.run(consume())
    assert [c.delta for c in seen[:2]] == ["t0 ", "t1 "]
    assert seen[-1].finish_reason == "error"
    assert info.value.details["stream_interrupted"] is True
    assert good.calls == 0  # no silent restart on another model mid-answer


def test_stream_cut_on_the_wire_before_first_token_fails_over() -> None:
    with FakeOpenAIServer(cut_after=0) as cut, FakeOpenAIServer(text="backup stream") as backup:
        mgr = manager(LLMEntry.of(OpenAILLM("cut", api_key="k", base_url=cut.base_url), priority=0),
                      LLMEntry.of(OpenAILLM("backup", api_key="k", base_url=backup.base_url), priority=1),
                      retries=1)
        chunks = asyncio.run(_collect(mgr.stream(MSGS)))
        assert "".join(c.delta for c in chunks) == "backup stream"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
        assert cut.count() == 2 and backup.count() == 1


def test_stream_usage_and_cost_accounted() -> None:
    mgr = manager(entry(FakeLLM("a"), price=Price(1_000_000, 1_000_000)))
    chunks = asyncio.run(_collect(mgr.stream(MSGS)))
    usage = chunks[-1].usage
    assert usage is not None
    assert mgr.status()["total_cost_usd"] == pytest.approx(usage.total_tokens)


# ---- embeddings ----
class FlakyEmbedder(FakeEmbedder):
    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    def embed(self, texts: Sequence[str], *, input_type: str = "document") -> np.ndarray:  # type: ignore[override]
        if self.failures:
            self.failures -= 1
            self.calls += 1
            raise ProviderServerError("boom")
        return super().embed(texts)


def test_embedding_cache_hits_and_keys_by_entry() -> None:
    fake = FakeEmbedder()
    mgr = EmbeddingManager([EmbedderEntry.of(fake)])
    first = mgr.embed(["a b", "c d"])
    second = mgr.embed(["c d", "e f"])
    np.testing.assert_allclose(second[0], first[1])
    assert mgr.cache.stats()["hits"] == 1 and fake.calls == 2
    assert mgr.dimension == 64 and mgr.embed([]).shape == (0, 64)


def test_embedding_retry_and_fallback() -> None:
    clock = FakeClock()
    flaky = FlakyEmbedder(failures=1)
    mgr = EmbeddingManager([EmbedderEntry.of(flaky, id="fake:flaky")], clock=clock, sleep=clock.sleep,
                           policy=RetryPolicy(max_retries=2, base_delay_s=0.01))
    assert mgr.embed(["x"]).shape == (1, 64)
    assert flaky.calls == 2

    dead = FlakyEmbedder(failures=100)
    backup = FakeEmbedder()
    mgr2 = EmbeddingManager([EmbedderEntry.of(dead, id="fake:dead", priority=0),
                             EmbedderEntry.of(backup, id="fake:backup", priority=1)],
                            clock=clock, sleep=clock.sleep, policy=RetryPolicy(max_retries=1))
    assert asyncio.run(mgr2.aembed(["y"])).shape == (1, 64)
    assert backup.calls == 1 and mgr2.status()["entries"][1]["prompt_tokens"] > 0


def test_embedding_manager_through_the_openai_fake_server() -> None:
    from rag_ray.embedding.openai import OpenAIEmbedder

    with FakeOpenAIServer(dimensions=12) as server:
        server.fail(1, 500)
        emb = OpenAIEmbedder("text-embedding-3-small", api_key="k", base_url=server.base_url, dimensions=6)
        mgr = EmbeddingManager([EmbedderEntry.of(emb)], policy=RetryPolicy(max_retries=2, base_delay_s=0.001))
        vectors = mgr.embed(["one", "two"])
        assert vectors.shape == (2, 6)
        mgr.embed(["one", "two"])
        assert server.count("/embeddings") == 2  # one failure + one success; the repeat is cached


# ---- configuration ----
def test_build_llm_manager_from_seed_settings() -> None:
    mgr = build_llm_manager(Settings(llm_provider="fake", llm_model="echo", llm_max_retries=5))
    assert [e.id for e in mgr.entries] == ["fake:echo"]
    assert mgr.pool.policy.max_retries == 5
    assert asyncio.run(mgr.generate(MSGS)).text.startswith("echo:")


def test_build_llm_manager_from_json_list() -> None:
    with FakeOpenAIServer() as server:
        providers = {"strategy": "cost_optimized", "providers": [
            {"id": "openai:gpt-4o", "api_key": "sk-secret", "base_url": server.base_url, "priority": 0},
            {"id": "fake:echo", "priority": 0, "input_price": 0, "output_price": 0}]}
        settings = Settings(RAG_LLM_PROVIDERS=json.dumps(providers))  # type: ignore[call-arg]
        mgr = build_llm_manager(settings)
        assert mgr.pool.default_strategy == "cost_optimized"
        assert asyncio.run(mgr.generate(MSGS)).provider == "fake"  # cheaper first
        assert "sk-secret" not in json.dumps(settings.masked())
        explicit = build_llm_manager(settings, [ProviderSpec(id="fake:other")])
        assert [e.id for e in explicit.entries] == ["fake:other"]


def test_bad_provider_json_names_the_field_without_echoing_secrets() -> None:
    settings = Settings(RAG_LLM_PROVIDERS='[{"api_key": "sk-leak"}]')  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as info:
        build_llm_manager(settings)
    assert info.value.field == "RAG_LLM_PROVIDERS" and "sk-leak" not in str(info.value)


def test_build_embedding_manager_from_json() -> None:
    settings = Settings(RAG_EMBEDDING_PROVIDERS=json.dumps([{"id": "fake:hash-bow"}]))  # type: ignore[call-arg]
    mgr = build_embedding_manager(settings)
    assert mgr.embed(["hello"]).shape == (1, 64)
