"""The local model's queue, batches and cancellation: the scheduler and decoding pieces on small tensors and a
scripted model (fast), then the real SmolLM2 (slow, one copy per session) in-process and over HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.errors import ProviderRateLimited, ProviderTimeout
from rag_ray.llm.base import Completion, GenerationParams, as_messages
from rag_ray.llm.local import AnswerNoRepeatNGram, Batcher, Decoding, Job, LoadStatus
from rag_ray.llm.local.decoding import MinNewTokens, RowTracker, left_pad, logits_processors
from tests.api_helpers import compose

GREEDY = Decoding(temperature=0.0, repetition_penalty=1.15, no_repeat_ngram_size=5)
EOS = frozenset({2})


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 600.0) -> None:
    """Wait for a condition (the bound only keeps a broken run from hanging; it is not what the test checks)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


# ---- decoding over a left-padded batch (no model) -------------------------------------------------------------
def test_left_padding_aligns_every_answer_at_the_padded_length() -> None:
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_answer_no_repeat_ngram_works_per_row_of_a_left_padded_batch() -> None:
    """Row 0 (short prompt, padded) loops in its answer; row 1 quotes its own prompt. With the padded length as the
    answer's start, row 0's next repeat is banned and row 1 stays free — neither sees the other's tokens."""
    ids, _ = left_pad([[5, 6], [1, 2, 3, 4]], pad_id=0)
    answers = torch.tensor([[1, 2, 3, 1, 2], [1, 2, 8, 8, 9]])
    scores = AnswerNoRepeatNGram(3, ids.shape[1])(torch.cat([ids, answers], dim=1), torch.zeros((2, 12)))
    assert scores[0, 3] == float("-inf") and torch.isfinite(scores[0, :3]).all()
    assert torch.isfinite(scores[1]).all()  # row 1's "1 2" came from its prompt, and its answer has no repeat


def test_repetition_penalty_and_min_tokens_are_per_row() -> None:
    ids, _ = left_pad([[7], [7, 7, 7]], pad_id=0)
    answers = torch.tensor([[4], [5]])
    procs = logits_processors(GREEDY, ids.shape[1], [2, 0], EOS)
    scores = procs(torch.cat([ids, answers], dim=1), torch.ones((2, 8)))
    assert scores[0, 4] < 1 and scores[0, 5] == 1 and scores[1, 5] < 1 and scores[1, 4] == 1  # own answer only
    assert scores[0, 7] == 1 and scores[1, 7] == 1  # the prompt's token 7 is not penalised
    assert scores[0, 2] == float("-inf") and scores[1, 2] == 1  # row 0 may not end before 2 tokens
    assert MinNewTokens([1], 1, EOS)(torch.tensor([[3, 4]]), torch.ones((1, 4)))[0, 2] == 1  # reached: allowed


# ---- the scheduler with a scripted model -----------------------------------------------------------------------
class ScriptedModel:
    """Emits token 10, 11, 12, … for every row through the real ``RowTracker``; ``gate`` holds each step so a test
    decides when the model moves. Records every batch it ran."""

    def __init__(self, eos_after: int | None = None):
        self.gate = threading.Semaphore(0)
        self.eos_after = eos_after
        self.batches: list[list[Job]] = []
        self.steps = 0

    def run(self, jobs: list[Job]) -> None:
        self.batches.append(list(jobs))
        tracker = RowTracker(jobs, EOS)
        for step in range(max(j.max_new for j in jobs)):
            self.gate.acquire()
            self.steps += 1
            token = 2 if self.eos_after is not None and step == self.eos_after else 10 + step
            if all(tracker(torch.tensor([[token]] * len(jobs)), None).tolist()):
                return


async def submit(batcher: Batcher, max_new: int = 3, decoding: Decoding = GREEDY,
                 deadline: float | None = None) -> Job:
    job = Job([1, 2, 3], max_new, decoding, deadline=deadline)
    batcher.submit(job)
    return job


async def finish(job: Job) -> None:
    while job.finish is None:
        await job.changed()


def scripted(fn: Callable[[ScriptedModel, Batcher], Awaitable[None]], **options: Any) -> None:
    model = ScriptedModel()
    batcher = Batcher(model.run, name="local:scripted", **{"max_queue": 2, "max_batch": 4, **options})
    try:
        asyncio.run(fn(model, batcher))
    finally:
        model.gate.release(10_000)  # let a job left running end


def test_waiting_requests_run_as_one_batch_and_a_full_queue_is_refused() -> None:
    async def body(model: ScriptedModel, batcher: Batcher) -> None:
        first = await submit(batcher)
        await until(lambda: batcher.status().active_generations == 1, "first running")
        waiting = [await submit(batcher), await submit(batcher)]
        with pytest.raises(ProviderRateLimited) as refused:
            await submit(batcher)
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        model.gate.release(100)
        for job in (first, *waiting):
            await finish(job)
            assert (job.finish, job.tokens) == ("length", [10, 11, 12])
        assert [len(b) for b in model.batches] == [1, 2]  # the two waiting requests shared one generate call
        await until(lambda: batcher.status().batches == 2, "the worker's bookkeeping")
        assert batcher.status() == LoadStatus(active_generations=0, queued=0, max_queue=2, max_batch=4,
                                              tokens_generated=9, batches=2, rejected=1)

    scripted(body)


def test_a_cancelled_request_never_starts_and_a_running_one_stops_at_the_next_token() -> None:
    async def body(model: ScriptedModel, batcher: Batcher) -> None:
        running = await submit(batcher, max_new=1000)
        model.gate.release(2)
        await until(lambda: len(running.tokens) == 2, "two tokens")
        queued = await submit(batcher)
        batcher.withdraw(queued)  # its caller went away while it waited
        assert queued.finish == "cancelled" and batcher.status().queued == 0
        batcher.withdraw(running)
        model.gate.release(1)  # one more step: the row sees the cancellation and the batch ends
        await until(lambda: batcher.status().active_generations == 0, "stopped")
        assert running.finish == "cancelled" and running.tokens == [10, 11]
        assert [b for b in model.batches if queued in b] == [] and model.steps == 3

    scripted(body)


def test_rows_end_at_their_own_limit_eos_or_deadline_while_the_others_go_on() -> None:
    async def body(model: ScriptedModel, batcher: Batcher) -> None:
        model.eos_after = 4
        blocker = await submit(batcher, max_new=1)
        await until(lambda: batcher.status().active_generations == 1, "blocker running")
        short, long_, late = (await submit(batcher, max_new=2), await submit(batcher, max_new=50),
                              await submit(batcher, max_new=50, deadline=0.0))  # already past: never starts
        model.gate.release(100)
        for job in (blocker, short, long_, late):
            await finish(job)
        assert (short.finish, short.tokens) == ("length", [10, 11])
        assert (long_.finish, long_.tokens) == ("stop", [10, 11, 12, 13])  # token 2 (eos) at step 4
        assert late.finish == "timeout" and not any(late in b for b in model.batches)

    scripted(body, max_queue=4)


def test_requests_with_different_decoding_run_in_separate_batches() -> None:
    async def body(model: ScriptedModel, batcher: Batcher) -> None:
        blocker = await submit(batcher, max_new=1)
        await until(lambda: batcher.status().active_generations == 1, "blocker running")
        sampled = Decoding(temperature=0.7, repetition_penalty=1.15, no_repeat_ngram_size=5)
        jobs = [await submit(batcher), await submit(batcher, decoding=sampled), await submit(batcher)]
        model.gate.release(100)
        for job in (blocker, *jobs):
            await finish(job)
        assert [[j.decoding.temperature for j in b] for b in model.batches] == [[0.0], [0.0, 0.0], [0.7]]

    scripted(body, max_queue=4)


# ---- the real model (slow) -------------------------------------------------------------------------------------
QUESTIONS = ("What is the capital of France?", "Name three primary colors.", "Explain photosynthesis briefly.")
GREEDY_PARAMS = GenerationParams(temperature=0.0, max_tokens=16)


def endless(max_tokens: int = 1500) -> GenerationParams:
    """A generation that runs until cancelled (no end-of-sequence allowed before ``max_tokens``)."""
    return GenerationParams(temperature=0.0, max_tokens=max_tokens, extra={"min_tokens": max_tokens})


STORY = as_messages("Tell me a very long story about a lighthouse keeper.")


async def occupy(llm: Any) -> asyncio.Task[Completion]:
    """Start a request that holds the model until cancelled; returns once it generates."""
    before = llm.status().tokens_generated
    task = asyncio.create_task(llm.generate(STORY, endless()))
    await until(lambda: task.done() or (llm.status().active_generations == 1
                                        and llm.status().tokens_generated > before), "the model generating")
    assert not task.done()
    return task


async def cancel_and_settle(llm: Any, *tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await until(lambda: llm.status().active_generations == 0 and llm.status().queued == 0, "the model idle")


@pytest.fixture
def local_llm_limits(local_llm: Any) -> Iterator[Any]:
    """The session's local model; the test may change its queue limits (restored afterwards)."""
    saved = (local_llm.scheduler.max_queue, local_llm.scheduler.max_batch)
    yield local_llm
    local_llm.scheduler.max_queue, local_llm.scheduler.max_batch = saved


@pytest.mark.slow
def test_cancelling_a_generate_task_stops_the_model_within_a_token(local_llm: Any) -> None:
    async def body() -> None:
        started = local_llm.status().tokens_generated
        task = await occupy(local_llm)
        await until(lambda: local_llm.status().tokens_generated >= started + 3, "a few tokens")
        at_cancel = local_llm.status().tokens_generated
        await cancel_and_settle(local_llm, task)
        status = local_llm.status()
        assert status.active_generations == 0 and status.tokens_generated - at_cancel <= 1
        assert task.cancelled()

    asyncio.run(body())


@pytest.mark.slow
def test_a_timeout_budget_ends_the_request_and_frees_the_model(local_llm: Any) -> None:
    async def body() -> None:
        with pytest.raises(ProviderTimeout, match="budget"):
            await local_llm.generate(STORY, GenerationParams(temperature=0.0, max_tokens=1500, timeout_s=1.0,
                                                            extra={"min_tokens": 1500}))
        await until(lambda: local_llm.status().active_generations == 0, "the model idle")
        assert local_llm.status().tokens_generated < 1500 * local_llm.status().batches

    asyncio.run(body())


@pytest.mark.slow
def test_closing_a_stream_stops_its_generation(local_llm: Any) -> None:
    async def body() -> None:
        stream = local_llm.stream(STORY, endless())
        first = await anext(stream)
        assert first.delta and local_llm.status().active_generations == 1
        await stream.aclose()
        await until(lambda: local_llm.status().active_generations == 0, "the model idle")

    asyncio.run(body())


@pytest.mark.slow
def test_a_batch_answers_exactly_like_one_request_at_a_time(local_llm_limits: Any) -> None:
    """Greedy decoding: the left-padded batch gives the same tokens as each prompt alone."""
    llm = local_llm_limits

    async def body() -> tuple[list[Completion], list[Completion], int]:
        alone = [await llm.generate(as_messages(q), GREEDY_PARAMS) for q in QUESTIONS]
        blocker = await occupy(llm)  # the questions below queue up behind it, then run as one batch
        together = [asyncio.create_task(llm.generate(as_messages(q), GREEDY_PARAMS)) for q in QUESTIONS]
        await until(lambda: llm.status().queued == len(QUESTIONS), "all waiting")
        batches = llm.status().batches
        await cancel_and_settle(llm, blocker)
        results = await asyncio.gather(*together)
        # A caller hears its answer before the worker thread counts the batch: wait for the count, not for time.
        await until(lambda: llm.status().batches >= batches + 2, "both batches counted", timeout_s=60)
        return alone, results, llm.status().batches - batches

    alone, together, batches = asyncio.run(body())
    assert batches == 2  # the blocker's, then one for all the questions
    assert [c.text for c in together] == [c.text for c in alone] and all(c.text for c in alone)
    assert [(c.usage.completion_tokens, c.finish_reason) for c in together] == \
           [(c.usage.completion_tokens, c.finish_reason) for c in alone]
    assert "Paris" in alone[0].text


@pytest.mark.slow
def test_a_full_local_queue_answers_503_with_retry_after_over_http(local_llm_limits: Any, make_settings: Any
                                                                   ) -> None:
    llm = local_llm_limits
    llm.scheduler.max_queue = 1
    settings = make_settings(llm_provider="local", llm_model="SmolLM2-135M-Instruct", llm_max_retries=0)
    client = TestClient(create_app(compose(settings, engine=llm)))
    auth = {"Authorization": "Bearer admin-token"}

    async def body() -> tuple[Any, str]:
        running = await occupy(llm)
        waiting = asyncio.create_task(llm.generate(STORY, endless()))
        await until(lambda: llm.status().queued == 1, "one request waiting")
        rejected = llm.status().rejected
        try:
            response = await asyncio.to_thread(client.post, "/chat", headers=auth, json={
                "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
            metrics = await asyncio.to_thread(client.get, "/metrics", headers=auth)
            return response, metrics.text
        finally:
            assert llm.status().rejected == rejected + 1
            await cancel_and_settle(llm, running, waiting)

    response, metrics = asyncio.run(body())
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert "busy" in response.text and "max_queue 1" in response.text
    entry = 'provider="local:SmolLM2-135M-Instruct"'
    assert f"rag_llm_queued{{{entry}}} 1" in metrics and f"rag_llm_active_generations{{{entry}}} 1" in metrics

