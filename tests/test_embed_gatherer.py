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
