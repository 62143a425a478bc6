"""Job admission: caps on concurrent jobs (overall and per user), the queue (order, positions, cancel), and
admission across processes. Through the in-process API (thread launcher), real SQLite and Milvus Lite."""

from __future__ import annotations

import itertools
import multiprocessing as mp
from pathlib import Path

import pytest

from rag_ray.ingest.tracking import JobLimits, JobStore
from rag_ray.metadata import MetadataDB
from tests.api_helpers import build_rig
from tests.job_helpers import GateEmbedder, aware, records, wait_until

DONE = ("succeeded", "failed", "cancelled")


def upload(rig, who: str, name: str) -> str:  # type: ignore[no-untyped-def]
    text = f"{name}: notes about presets and plugins, written by {who}.\n" * 20
    r = rig.client.post("/documents/upload", headers=rig.auth(who), files={"file": (name, text.encode())})
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def job(rig, job_id: str, who: str = "admin") -> dict:  # type: ignore[no-untyped-def,type-arg]
    r = rig.client.get(f"/jobs/{job_id}", headers=rig.auth(who))
    assert r.status_code == 200, r.text
    return r.json()


def wait_finished(rig, job_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    def done() -> bool:
        return all(job(rig, j)["status"] in DONE and job(rig, j)["finished_at"] for j in job_ids)

    try:
        wait_until(done, what="the jobs to end")
    except AssertionError as exc:
        states = [{k: job(rig, j)[k] for k in ("status", "message", "finished_at")} for j in job_ids]
        raise AssertionError(f"{exc}: {states}") from None


def test_jobs_beyond_the_cap_queue_in_order_and_a_queued_job_can_be_cancelled(make_settings, fake_store):
    embedder = GateEmbedder()
    rig = build_rig(make_settings(jobs_max_concurrent=1, jobs_max_per_user=5), fake_store, embedder=embedder)
    try:
        first = upload(rig, "alice", "a1.txt")
        assert job(rig, first)["status"] in ("pending", "running")
        second, third = upload(rig, "bob", "b1.txt"), upload(rig, "alice", "a2.txt")
        fourth = upload(rig, "admin", "c.txt")

        assert [(job(rig, j)["status"], job(rig, j)["queue_position"]) for j in (second, third, fourth)] == [
            ("queued", 1), ("queued", 2), ("queued", 3)]
        assert job(rig, first)["queue_position"] is None
        own = {j["job_id"]: j for j in rig.client.get("/jobs", headers=rig.auth("alice")).json()["jobs"]}
        assert set(own) == {first, third} and own[third]["queue_position"] == 2
        listed = {j["job_id"]: j["queue_position"] for j in rig.client.get("/jobs", headers=rig.auth()).json()["jobs"]}
        assert listed == {first: None, second: 1, third: 2, fourth: 3}
        assert rig.client.get(f"/jobs/{third}", headers=rig.auth("bob")).status_code == 404

        cancelled = rig.client.post(f"/jobs/{third}/cancel", headers=rig.auth("alice"))
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["finished_at"] and cancelled.json()["queue_position"] is None
        assert rig.client.post(f"/jobs/{third}/cancel", headers=rig.auth("alice")).status_code == 409
        assert rig.client.post(f"/jobs/{second}/pause", headers=rig.auth()).status_code == 409  # not started yet
        assert job(rig, fourth)["queue_position"] == 2 and job(rig, second)["queue_position"] == 1
    finally:
        embedder.gate.set()

    wait_finished(rig, [first, second, fourth])
    assert [job(rig, j)["status"] for j in (first, second, third, fourth)] == [
        "succeeded", "succeeded", "cancelled", "succeeded"]
    ran = records(rig.db, [first, second, fourth])
    for before, after in itertools.pairwise(ran):  # one at a time, in submission order
        assert aware(before.finished_at) <= aware(after.started_at)
    assert records(rig.db, [third])[0].started_at is None  # the cancelled job never ran
    assert rig.client.get("/documents", headers=rig.auth("alice")).json()["documents"][0]["source"].endswith("a1.txt")


def test_per_user_cap_lets_other_users_pass_a_busy_users_queue(make_settings, fake_store):
    embedder = GateEmbedder()
    rig = build_rig(make_settings(jobs_max_concurrent=2, jobs_max_per_user=1), fake_store, embedder=embedder)
    try:
        alice_1, alice_2 = upload(rig, "alice", "a1.txt"), upload(rig, "alice", "a2.txt")
        bob = upload(rig, "bob", "b1.txt")
        assert job(rig, alice_1)["status"] in ("pending", "running")
        assert (job(rig, alice_2)["status"], job(rig, alice_2)["queue_position"]) == ("queued", 1)
        assert job(rig, bob)["status"] in ("pending", "running")  # a free slot, and bob has no job running
        carol = upload(rig, "admin", "c.txt")
        assert (job(rig, carol)["status"], job(rig, carol)["queue_position"]) == ("queued", 2)  # both slots taken
    finally:
        embedder.gate.set()
    wait_finished(rig, [alice_1, alice_2, bob, carol])
    assert {job(rig, j)["status"] for j in (alice_1, alice_2, bob, carol)} == {"succeeded"}
    first, second = records(rig.db, [alice_1, alice_2])
    assert aware(first.finished_at) <= aware(second.started_at)  # alice never had two jobs running


# ---- across processes: each child process holds one job's slot until the parent releases it


def _hold_a_slot(url: str, job_id: str, release: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    from rag_ray.ingest.supervise import supervise

    jobs = JobStore(MetadataDB(url), JobLimits(max_concurrent=2, max_per_user=10))
    with supervise(jobs, job_id):
        jobs.set_status(job_id, "running", allowed_from=("pending",))
        release.wait(300)
    jobs.set_status(job_id, "succeeded", finished=True)


def test_admission_holds_across_processes(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    jobs = JobStore(MetadataDB(url), JobLimits(max_concurrent=2, max_per_user=10))
    job_ids = [jobs.create("files", {}, created_by=f"user-{i}") for i in range(5)]
    ctx = mp.get_context("spawn")
    releases = [ctx.Event() for _ in job_ids]
    children = [ctx.Process(target=_hold_a_slot, args=(url, j, r)) for j, r in zip(job_ids, releases, strict=True)]
    for child in reversed(children):  # start order must not matter: admission follows the queue
        child.start()
    try:
        def states() -> list[str]:
            return [jobs.status(j) for j in job_ids]

        for step in range(len(job_ids)):
            running = wait_until(lambda s=step: (st := states()).count("running") == min(2, len(job_ids) - s) and st,
                                 what=f"step {step}")
            assert running[:step] == ["succeeded"] * step  # earlier jobs, in order
            assert running[step:step + 2] == ["running"] * len(running[step:step + 2])  # the two oldest run
            assert set(running[step + 2:]) <= {"queued"}
            assert [jobs.get(j).queue_position for j in job_ids[step + 2:]] == list(range(1, len(job_ids) - step - 1))
            releases[step].set()
            wait_until(lambda s=step: jobs.status(job_ids[s]) == "succeeded", what=f"job {step} to end")
    finally:
        for release in releases:
            release.set()
        for child in children:
            child.join(60)
    assert [c.exitcode for c in children] == [0] * len(children)
    assert [r.status for r in records(jobs.db, job_ids)] == ["succeeded"] * len(job_ids)


@pytest.mark.parametrize("holder", ["queue", "driver"])
def test_a_job_whose_holder_died_is_failed_and_frees_its_place(tmp_path: Path, holder: str):
    jobs = JobStore(MetadataDB(f"sqlite:///{tmp_path / 'jobs.sqlite'}"), JobLimits(max_concurrent=1, lease_s=60))
    dead = jobs.create("files", {}, created_by="alice")
    if holder == "driver":
        assert jobs.admit([dead]).admitted == [dead]
    waiting = jobs.create("files", {}, created_by="bob")
    assert jobs.admit([waiting]).admitted == []
    with jobs.db.session() as s:  # its holder stopped heartbeating two minutes ago
        from datetime import timedelta

        from rag_ray.ingest.tracking import utcnow
        from rag_ray.metadata import JobRecord

        s.get(JobRecord, dead).heartbeat_at = utcnow() - timedelta(seconds=120)  # type: ignore[union-attr]
    if holder == "driver":  # looking at a dead job fails it, even when nothing is being admitted
        assert jobs.get(dead).status == "failed"
    assert jobs.admit([waiting]).admitted == [waiting]
    gone = jobs.get(dead)
    assert gone.status == "failed" and gone.finished_at
    assert ("abandoned" if holder == "queue" else "no heartbeat") in gone.message
