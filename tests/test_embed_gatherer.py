"""The router's Gatherer: how concurrent /embeddings calls become handle calls to the embedder (no Ray needed: the
``send`` it is given stands in for the handle, and records what it was sent)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.embedder import BatchItem, Gatherer, embed_grouped, replica_threads
from rag_ray.config import Settings


class RecordingSend:
    """Holds every call until the test releases it; vectors are the texts' lengths, so answers can be checked."""

    def __init__(self) -> None:
        self.calls: list[list[BatchItem]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[BatchItem]) -> list[np.ndarray]:
        self.calls.append(items)
        await self.release.wait()

        async def encode(texts: list[str], _: str) -> np.ndarray:
            return np.array([[float(len(t))] for t in texts], np.float32)

        return await embed_grouped(items, encode, 1)

    @property
    def sizes(self) -> list[int]:
        return [sum(len(texts) for texts, _ in call) for call in self.calls]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)  # let the gatherer's tasks run up to their await on the held send


def test_a_lone_call_leaves_at_once_and_later_ones_wait_for_a_return_then_leave_together():
    asyncio.run(_a_lone_call_leaves_at_once_and_later_ones_wait_for_a_return_then_leave_together())


async def _a_lone_call_leaves_at_once_and_later_ones_wait_for_a_return_then_leave_together() -> None:
    send = RecordingSend()
    gatherer = Gatherer(send, steady_in_flight=2, max_in_flight=4, max_texts=64)
    calls = [asyncio.create_task(gatherer.submit(((f"text {i}",), "query"))) for i in range(10)]
    await settle()
    assert send.sizes == [1, 1], "two calls leave at once; the other eight wait (no full batch)"
    send.release.set()
    results = await asyncio.gather(*calls)
    assert send.sizes == [1, 1, 8], "the eight waiting calls leave as one batch when a call returns"
    assert [float(r[0, 0]) for r in results] == [float(len(f"text {i}")) for i in range(10)]


async def busy_spell(gatherer: Gatherer, send: RecordingSend, texts: int) -> None:
    """``texts`` one-text calls at once, all answered: the gatherer has seen that many under way."""
    calls = [asyncio.create_task(gatherer.submit(((f"busy {i}",), "query"))) for i in range(texts)]
    await settle()
    send.release.set()
    await asyncio.gather(*calls)
    send.release.clear()
    send.calls.clear()


def test_while_a_call_is_in_flight_a_new_one_waits_for_company():
    asyncio.run(_while_a_call_is_in_flight_a_new_one_waits_for_company())


async def _while_a_call_is_in_flight_a_new_one_waits_for_company() -> None:
    send = RecordingSend()
    gatherer = Gatherer(send, steady_in_flight=2, max_in_flight=4, max_texts=64, min_texts=4)
    await busy_spell(gatherer, send, 8)  # 8 under way over two calls: a call's share is 4 (and min_texts is 4)
    gatherer.call_s = 3600.0  # calls take an hour: no text runs out of patience in this test
    calls = [asyncio.create_task(gatherer.submit(((f"text {i}",), "query"))) for i in range(4)]
    await settle()
    assert send.sizes == [1], "the first leaves at once; three texts are not company enough for a second call"
    calls.append(asyncio.create_task(gatherer.submit((("text 4",), "query"))))
    await settle()
    assert send.sizes == [1, 4], "with the fourth text waiting, they leave together in the free slot"
    send.release.set()
    await asyncio.gather(*calls)
    assert gatherer.in_flight == 0 and not gatherer.pending


def test_a_light_load_does_not_wait_for_company_that_cannot_come():
    asyncio.run(_a_light_load_does_not_wait_for_company_that_cannot_come())


async def _a_light_load_does_not_wait_for_company_that_cannot_come() -> None:
    send = RecordingSend()
    gatherer = Gatherer(send, steady_in_flight=2, max_in_flight=4, max_texts=64, min_texts=16)
    gatherer.call_s = 3600.0
    calls = [asyncio.create_task(gatherer.submit(((f"text {i}",), "query"))) for i in range(2)]
    await settle()
    assert send.sizes == [1, 1], "two clients: each call's share of what is under way is one text"
    send.release.set()
    await asyncio.gather(*calls)


def test_a_call_without_company_leaves_once_it_has_waited_a_share_of_a_call():
    asyncio.run(_a_call_without_company_leaves_once_it_has_waited_a_share_of_a_call())


async def _a_call_without_company_leaves_once_it_has_waited_a_share_of_a_call() -> None:
    send = RecordingSend()
    gatherer = Gatherer(send, steady_in_flight=2, max_in_flight=4, max_texts=64, min_texts=16)
    await busy_spell(gatherer, send, 32)
    gatherer.call_s = 0.2  # a call takes 200 ms: a free slot waits at most 50 ms for company
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(gatherer.submit((("first",), "query")))
    await settle()
    waited_from = loop.time()
    second = asyncio.create_task(gatherer.submit((("second",), "query")))
    await settle()
    assert send.sizes == [1]
    while len(send.calls) < 2:
        await asyncio.sleep(0.005)  # the gatherer's own timer sends it
    assert loop.time() - waited_from >= Gatherer.WAIT_SHARE * 0.2
    assert send.sizes == [1, 1]
    send.release.set()
    await asyncio.gather(first, second)


def test_the_patience_follows_how_long_calls_take():
    asyncio.run(_the_patience_follows_how_long_calls_take())


async def _the_patience_follows_how_long_calls_take() -> None:
    async def quick(items: list[BatchItem]) -> list[np.ndarray]:
        return [np.zeros((len(texts), 1), np.float32) for texts, _ in items]

    gatherer = Gatherer(quick)
    assert gatherer.call_s == 0.0, "no call yet: nothing to wait for"
    await gatherer.submit((("x",), "query"))
    first = gatherer.call_s
    assert 0.0 < first < 1.0
    gatherer.call_s = 10.0
    await gatherer.submit((("y",), "query"))
    assert gatherer.call_s == pytest.approx((1 - Gatherer.RECENT) * 10.0, abs=0.2), "a running average, not the last"


def test_full_batches_use_the_extra_slots_under_heavy_load():
    asyncio.run(_full_batches_use_the_extra_slots_under_heavy_load())


async def _full_batches_use_the_extra_slots_under_heavy_load() -> None:
    send = RecordingSend()
    gatherer = Gatherer(send, steady_in_flight=2, max_in_flight=4, max_texts=8)
    calls = [asyncio.create_task(gatherer.submit((tuple(f"t{i}-{j}" for j in range(4)), "document")))
             for i in range(12)]
    await settle()
    # two calls as soon as they come, then full batches (8 texts = two calls) up to four in flight
    assert send.sizes == [4, 4, 8, 8]
    assert gatherer.pending_texts == 24
    send.release.set()
    await asyncio.gather(*calls)
    assert sum(send.sizes) == 48
    assert max(send.sizes) <= 8


def test_a_call_larger_than_a_batch_still_leaves_and_one_whose_caller_left_is_not_sent():
    asyncio.run(_a_call_larger_than_a_batch_still_leaves_and_one_whose_caller_left_is_not_sent())


async def _a_call_larger_than_a_batch_still_leaves_and_one_whose_caller_left_is_not_sent() -> None:
    send = RecordingSend()
    gatherer = Gatherer(send, steady_in_flight=1, max_in_flight=1, max_texts=4)
    first = asyncio.create_task(gatherer.submit((("a",), "query")))
    big = asyncio.create_task(gatherer.submit((tuple("bcdefg"), "query")))
    gone = asyncio.create_task(gatherer.submit((("gone",), "query")))
    await settle()
    gone.cancel()  # the client left while its call waited
    await settle()
    send.release.set()
    await asyncio.gather(first, big)
    assert send.sizes == [1, 6]
    assert all("gone" not in texts for call in send.calls for texts, _ in call)
    with pytest.raises(asyncio.CancelledError):
        await gone


def test_a_failed_call_fails_every_caller_it_carried_and_the_next_ones_still_leave():
    asyncio.run(_a_failed_call_fails_every_caller_it_carried_and_the_next_ones_still_leave())


async def _a_failed_call_fails_every_caller_it_carried_and_the_next_ones_still_leave() -> None:
    attempts: list[int] = []

    async def flaky(items: list[BatchItem]) -> list[np.ndarray]:
        attempts.append(len(items))
        if len(attempts) == 1:
            raise RuntimeError("replica died")
        return [np.zeros((len(texts), 1), np.float32) for texts, _ in items]

    gatherer = Gatherer(flaky, steady_in_flight=1, max_in_flight=1)
    first = asyncio.create_task(gatherer.submit((("x",), "query")))
    second = asyncio.create_task(gatherer.submit((("y",), "query")))
    with pytest.raises(RuntimeError, match="replica died"):
        await first
    assert (await second).shape == (1, 1)
    assert gatherer.in_flight == 0 and not gatherer.pending


@pytest.mark.parametrize(("configured", "replicas", "reserved", "expected"),
                         [(0, 2, 0.25, "half"), (0, 1, 0.25, 0), (3, 2, 0.25, 3), (0, 8, 1.0, 1), (0, 2, 4.0, 4),
                          (3, 2, 4.0, 3)])
def test_replica_threads_follow_its_whole_cpus_else_split_the_node(tmp_path, configured, replicas, reserved,
                                                                    expected):
    import os

    settings = Settings(data_dir=tmp_path, embedding_threads=configured)
    threads = replica_threads(settings, replicas, reserved).embedding_threads
    assert threads == (max(1, (os.cpu_count() or 1) // 2) if expected == "half" else expected)
