"""`/extract/filesystem` batch_config: every field does what it says or is refused.

- adaptive batching: ``AdaptiveBatcher`` (fake clock) climbs to the fastest batch size within its bounds and backs
  off when memory runs over; an ingest with it on lists the sizes it chose in the job's progress;
- ``memory_limit_mb``: the job's Ray Data object store limit and the batcher's memory bound;
- ``processing_strategy``: the order files are processed in, visible in the job's ``first_items``;
- unknown or out-of-range values: 422 naming ``batch_config.<field>``.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest

from rag_ray.ingest.batching import AdaptiveBatcher, BatchPolicy
from rag_ray.ingest.executor import LocalExecutor, batch_policy
from tests.api_helpers import build_rig, inbox
from tests.test_api_jobs import wait_job


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def model_cost(size: int) -> float:
    """Seconds one batch takes on the fake model: a fixed overhead per call, then slower per item past 64
    (padding, cache misses) — so 64 is the fastest size."""
    return 0.05 + 0.01 * size + 0.02 * max(0, size - 64)


def run_batches(batcher: AdaptiveBatcher, clock: FakeClock, items: int) -> Counter[int]:
    """Items encoded at each batch size."""
    encoded: Counter[int] = Counter()

    def encode(part: list[int]) -> int:
        clock.now += model_cost(len(part))
        encoded[len(part)] += len(part)
        return len(part)

    batcher.map(list(range(items)), encode)
    return encoded


def test_adaptive_batcher_climbs_to_the_fastest_size_within_bounds():
    clock = FakeClock()
    batcher = AdaptiveBatcher(8, 4, 512, clock=clock, memory_probe=lambda: 0)
    encoded = run_batches(batcher, clock, 20_000)
    assert encoded.most_common(1)[0][0] == 64 and encoded[64] > 0.8 * 20_000  # it settles there
    assert all(4 <= size <= 512 for size in batcher.history)
    assert 128 in batcher.history  # it looked past the optimum and came back
    assert 512 not in batcher.history  # ... but not further than one step


def test_adaptive_batcher_respects_a_low_maximum_and_minimum():
    clock = FakeClock()
    batcher = AdaptiveBatcher(16, 8, 32, clock=clock, memory_probe=lambda: 0)
    encoded = run_batches(batcher, clock, 5_000)
    assert encoded.most_common(1)[0][0] == 32 and max(batcher.history) == 32 and min(batcher.history) >= 8


def test_adaptive_batcher_backs_off_when_memory_runs_over():
    clock = FakeClock()
    memory = {"rss": 100}
    batcher = AdaptiveBatcher(64, 4, 512, clock=clock, memory_limit_bytes=1000, memory_probe=lambda: memory["rss"])
    assert run_batches(batcher, clock, 2_000).most_common(1)[0][0] == 64
    batcher.size = 64
    memory["rss"] = 5000  # over the budget: halve at once, and never climb past that again
    run_batches(batcher, clock, 64)
    assert batcher.size <= batcher.maximum < 64
    memory["rss"] = 100
    assert max(run_batches(batcher, clock, 10_000)) <= batcher.maximum < 64


def test_policy_from_settings_and_memory_limit(make_settings):
    settings = make_settings(ingest_adaptive_batching=True, ingest_batch_min=2, ingest_batch_max=64,
                             ingest_memory_limit_mb=512, embedding_batch_size=8)
    policy = batch_policy(settings)
    assert policy == BatchPolicy(size=8, adaptive=True, minimum=2, maximum=64, memory_limit_bytes=512 << 20)
    batcher = policy.batcher()
    assert batcher is not None and batcher.memory_limit_bytes == 512 << 20
    assert BatchPolicy().batcher() is None  # fixed sizes by default


def test_memory_limit_bounds_the_ray_data_object_store(make_settings):
    ray_executor = pytest.importorskip("jobs.ray_executor")
    executor = ray_executor.RayDataExecutor.from_settings(make_settings(ingest_memory_limit_mb=300))
    limits = executor.resource_limits(share=2.0)
    assert limits.object_store_memory == 300 << 20 and limits.cpu == 2.0
    assert ray_executor.RayDataExecutor().resource_limits(1.0).object_store_memory == float("inf")  # no limit


@pytest.fixture
def rig(make_settings, fake_store):
    return build_rig(make_settings(ingest_batch_min=2, ingest_batch_max=64), fake_store)


def make_files(rig, name: str, sizes: dict[str, int]) -> None:
    """Files of the given sizes (bytes of text), each one modified later than the one before."""
    folder = inbox(rig.settings) / name
    folder.mkdir(parents=True)
    for i, (file_name, size) in enumerate(sizes.items()):
        path = folder / file_name
        words = f"{file_name} talks about topic {i}. "
        path.write_text((words * (size // len(words) + 1))[:size])
        os.utime(path, ns=(1_700_000_000_000_000_000 + i * 10**9,) * 2)


SIZES = {"a_large.txt": 6000, "b_small.txt": 300, "c_medium.txt": 2500, "d_tiny.txt": 100}


@pytest.mark.parametrize(("strategy", "expected"), [
    ("fifo", ["a_large.txt", "b_small.txt", "c_medium.txt", "d_tiny.txt"]),
    ("size_based", ["d_tiny.txt", "b_small.txt", "c_medium.txt", "a_large.txt"]),
    ("priority_based", ["d_tiny.txt", "c_medium.txt", "b_small.txt", "a_large.txt"]),
])
def test_processing_strategy_orders_the_files(rig, strategy, expected):
    make_files(rig, strategy, SIZES)
    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={
        "directory": str(inbox(rig.settings) / strategy), "batch_config": {"processing_strategy": strategy}})
    assert r.status_code == 202, r.text
    job = wait_job(rig, r.json()["job_id"])
    assert job["status"] == "succeeded" and job["items_done"] == 4
    assert [p.rsplit("/", 1)[-1] for p in job["first_items"]] == expected


def test_adaptive_batching_sizes_are_in_the_job_progress(rig, shared_data):
    docs = inbox(rig.settings) / "docs"
    shutil.copytree(shared_data / "documents", docs, ignore=shutil.ignore_patterns("*.pdf", "SOURCE.md"))
    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={"directory": str(docs), "batch_config": {
        "batch_size": 2, "enable_adaptive_batching": True, "memory_limit_mb": 4096}})
    assert r.status_code == 202, r.text
    job = wait_job(rig, r.json()["job_id"])
    assert job["status"] == "succeeded" and job["chunks_done"] == rig.store.count() > 20
    sizes = job["embed_batch_sizes"]
    assert sizes[0] == 2 and len(sizes) > 1 and all(2 <= s <= 64 for s in sizes)  # it moved, within the bounds

    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={
        "directory": str(docs), "only_changed": False, "batch_config": {"batch_size": 5}})
    job = wait_job(rig, r.json()["job_id"])
    assert job["status"] == "succeeded" and job["embed_batch_sizes"] == [5]  # fixed: as asked


@pytest.mark.parametrize(("field", "value"), [
    ("processing_strategy", "random"), ("processing_strategy", 3), ("memory_limit_mb", 16),
    ("enable_adaptive_batching", "sometimes"), ("batch_size", 0), ("max_workers", 0), ("bogus", 1),
])
def test_unknown_batch_config_values_are_refused(rig, field, value):
    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={
        "directory": str(inbox(rig.settings)), "batch_config": {field: value}})
    assert r.status_code == 422 and r.json()["field"] == f"batch_config.{field}", r.text


def test_local_executor_follows_the_settings(make_settings):
    executor = LocalExecutor.from_settings(make_settings(ingest_processing_strategy="size_based",
                                                         ingest_adaptive_batching=True))
    assert executor.strategy == "size_based" and executor.policy is not None and executor.policy.adaptive
