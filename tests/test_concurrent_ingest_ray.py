"""Concurrent ingest jobs on the session's local Ray (2 CPUs) never wedge each other: six one-file uploads launched
as Ray tasks the production way (``FileJobService`` → ``RayPlatform.launch``), each a Ray Data pipeline with its
own embedding actor, four admitted at a time. Before, such a burst waited for CPUs forever."""

from __future__ import annotations

from functools import partial

import pytest

from deployments.platform import RayPlatform
from rag_ray.ingest.file_jobs import FileJobService, upload_request
from rag_ray.metadata import DocumentRecord, MetadataDB
from rag_ray.server.platform import run_file_ingest
from rag_ray.types import Principal
from tests.job_helpers import aware, records, wait_until

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.mark.slow  # 40-90 s on the shared 2-core machine: six Ray Data pipelines, each starting its actors
def test_a_burst_of_small_ray_data_ingests_all_finish(make_settings, fake_store):
    # jobs_local_max_files=0: every job takes the Ray Data path (actors), the one that used to deadlock
    settings = make_settings(jobs_max_concurrent=4, jobs_max_per_user=4, jobs_local_max_files=0)
    db = MetadataDB(settings.metadata_url)
    platform = RayPlatform()
    service = FileJobService(settings, db, fake_store, partial(run_file_ingest, platform), launcher=platform.launch)
    alice = Principal("u-alice", "alice", "user")
    job_ids = []
    for i in range(6):
        path = service.save_upload(alice, f"note{i}.txt", f"Note {i}: presets and plugins. ".encode() * 40)
        job_ids.append(service.submit(upload_request(path, alice, (), "private"), alice, confine=False))
    assert [service.jobs.get(j).status for j in job_ids].count("queued") == 2  # four admitted at once

    def ended() -> bool:
        return all(service.jobs.get(j).finished_at for j in job_ids)

    wait_until(ended, timeout_s=600, what="all six jobs")
    jobs = [service.jobs.get(j) for j in job_ids]
    assert [j.status for j in jobs] == ["succeeded"] * 6, [(j.status, j.message) for j in jobs]
    with db.session() as s:
        assert s.query(DocumentRecord).filter(DocumentRecord.owner_id == "u-alice").count() == 6
    assert fake_store.count() == sum(j.chunks_done for j in jobs) > 0
    spans = [(aware(r.started_at), aware(r.finished_at)) for r in records(db, job_ids)]
    for start, _ in spans:  # never more than four at once
        assert sum(1 for s, f in spans if s <= start < f) <= 4
