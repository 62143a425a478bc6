"""Jobs, /extract/filesystem, documents and metrics routes in-process (no Ray): real SQLite and Milvus Lite."""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.ingest.callbacks import verify_signature
from tests.api_helpers import build_rig, inbox


def wait_job(rig, job_id: str, states=("succeeded", "failed", "cancelled"), who: str = "admin",
             timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = rig.client.get(f"/jobs/{job_id}", headers=rig.auth(who)).json()
        if body["status"] in states and body["finished_at"]:
            return body
        time.sleep(0.05)  # a background thread owns the job; its record is the only signal
    raise AssertionError(f"job {job_id} stuck: {body}")


@pytest.fixture
def rig(make_settings, fake_store):
    return build_rig(make_settings(), fake_store)


def test_extract_filesystem_runs_a_job_with_progress(rig, shared_data):
    docs = inbox(rig.settings) / "docs"
    shutil.copytree(shared_data / "documents", docs, ignore=shutil.ignore_patterns("*.pdf", "SOURCE.md"))
    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={
        "directory": str(docs), "file_patterns": ["*.txt", "*.md"], "exclude_patterns": ["*udhr*"],
        "batch_config": {"max_workers": 2, "batch_size": 32, "memory_limit_mb": 1024,
                         "enable_adaptive_batching": True, "processing_strategy": "priority_based"}})
    assert r.status_code == 202, r.text
    job = wait_job(rig, r.json()["job_id"])
    assert job["status"] == "succeeded" and job["items_total"] == 4 and job["items_done"] == 4
    assert job["chunks_done"] == rig.store.count() > 0 and job["rate_chunks_per_s"] > 0 and job["eta_s"] == 0
    listed = rig.client.get("/jobs", headers=rig.auth()).json()["jobs"]
    assert listed[0]["job_id"] == job["job_id"]


def test_extract_filesystem_refuses_paths_outside_roots_and_non_admins(rig, tmp_path):
    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={"directory": "/etc"})
    assert r.status_code == 403 and r.json()["field"] == "directory"
    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={"directory": "../../etc"})
    assert r.status_code == 403
    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={"directory": str(inbox(rig.settings) / "x")})
    assert r.status_code == 422 and r.json()["field"] == "path"
    r = rig.client.post("/extract/filesystem", headers=rig.auth("alice"), json={"directory": str(tmp_path)})
    assert r.status_code == 403
    r = rig.client.post("/extract/filesystem", headers=rig.auth(), json={"directory": "x", "batch_config": {
        "max_workers": 0}})
    assert r.status_code == 422 and r.json()["field"] == "batch_config.max_workers"


def test_upload_list_get_delete_are_per_owner(rig, shared_data):
    data = (shared_data / "documents" / "en_war_and_peace_1p.txt").read_bytes()
    r = rig.client.post("/documents/upload", headers=rig.auth("alice"), files={"file": ("war.txt", data)})
    assert r.status_code == 202, r.text
    wait_job(rig, r.json()["job_id"], who="alice")
    docs = rig.client.get("/documents", headers=rig.auth("alice")).json()["documents"]
    assert len(docs) == 1 and docs[0]["owner_id"] == "u-alice" and docs[0]["visibility"] == "private"
    doc_id = docs[0]["doc_id"]
    assert rig.client.get("/documents", headers=rig.auth("bob")).json()["documents"] == []
    missing = rig.client.get("/documents/nope", headers=rig.auth("bob"))
    foreign = rig.client.get(f"/documents/{doc_id}", headers=rig.auth("bob"))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"] == missing.json()["error"]
    assert rig.client.delete(f"/documents/{doc_id}", headers=rig.auth("bob")).status_code == 404
    hits = rig.client.post("/query", headers=rig.auth("alice"), json={"query": "Prince Vasili Anna Pavlovna",
                                                                     "mode": "search"}).json()["sources"]
    assert hits and hits[0]["doc_id"] == doc_id
    assert rig.client.post("/query", headers=rig.auth("bob"), json={"query": "Prince Vasili Anna Pavlovna",
                                                                   "mode": "search"}).json()["sources"] == []
    r = rig.client.delete(f"/documents/{doc_id}", headers=rig.auth("alice"))
    assert r.status_code == 200 and r.json()["chunks_deleted"] > 0
    assert rig.store.count(f'doc_id == "{doc_id}"') == 0


def test_upload_rejects_bad_files(rig, make_settings, fake_store):
    r = rig.client.post("/documents/upload", headers=rig.auth("alice"), files={"file": ("x.exe", b"MZ")})
    assert r.status_code == 422 and r.json()["field"] == "file"
    r = rig.client.post("/documents/upload", headers=rig.auth("alice"), files={"file": ("x.txt", b"hi")},
                        data={"group_ids": "g-other", "visibility": "group"})
    assert r.status_code == 403 and r.json()["field"] == "group_ids"
    small = build_rig(make_settings(max_upload_bytes=1000), fake_store)
    r = small.client.post("/documents/upload", headers=small.auth("alice"), files={"file": ("x.txt", b"a" * 5000)})
    assert r.status_code == 413


class GatedEmbedder(FakeEmbedder):
    """Blocks every embed call until released, so a job can be paused and cancelled mid-flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def embed(self, texts, *, input_type="document") -> np.ndarray:  # type: ignore[no-untyped-def,override]
        self.entered.set()
        assert self.gate.wait(30)
        return super().embed(texts, input_type=input_type)


def test_pause_resume_cancel_a_running_job(make_settings, fake_store, shared_data):
    embedder = GatedEmbedder()
    rig = build_rig(make_settings(), fake_store, embedder=embedder)
    docs = inbox(rig.settings) / "docs"
    shutil.copytree(shared_data / "documents", docs, ignore=shutil.ignore_patterns("*.pdf", "*.xlsx", "SOURCE.md"))
    job_id = rig.client.post("/extract/filesystem", headers=rig.auth(), json={"directory": str(docs)}).json()["job_id"]
    assert embedder.entered.wait(30)
    assert rig.client.post(f"/jobs/{job_id}/pause", headers=rig.auth()).json()["status"] == "paused"
    assert rig.client.post(f"/jobs/{job_id}/pause", headers=rig.auth()).status_code == 409
    assert rig.client.post(f"/jobs/{job_id}/resume", headers=rig.auth()).json()["status"] == "running"
    assert rig.client.post(f"/jobs/{job_id}/cancel", headers=rig.auth()).json()["status"] == "cancelled"
    assert rig.client.post(f"/jobs/{job_id}/cancel", headers=rig.auth(), ).status_code == 409
    embedder.gate.set()
    job = wait_job(rig, job_id)
    assert job["status"] == "cancelled" and job["items_done"] < job["items_total"]
    assert rig.client.get(f"/jobs/{job_id}", headers=rig.auth("bob")).status_code == 404


class Receiver(BaseHTTPRequestHandler):
    events: ClassVar[list[tuple[bytes, dict[str, str]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.events.append((body, dict(self.headers)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


def test_progress_callback_is_signed_and_ssrf_checked(make_settings, fake_store, shared_data):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/progress"
    try:
        strict = build_rig(make_settings(), fake_store)
        docs = inbox(strict.settings) / "docs"
        shutil.copytree(shared_data / "documents", docs, ignore=shutil.ignore_patterns("*.pdf", "SOURCE.md"))
        r = strict.client.post("/extract/filesystem", headers=strict.auth(),
                               json={"directory": str(docs), "progress_callback_url": url})
        assert r.status_code == 422 and r.json()["field"] == "progress_callback_url"

        rig = build_rig(make_settings(callback_allow_private=True, callback_secret="cb-secret"), fake_store)
        r = rig.client.post("/extract/filesystem", headers=rig.auth(),
                            json={"directory": str(docs), "file_patterns": ["*.txt"], "progress_callback_url": url})
        wait_job(rig, r.json()["job_id"])
        deadline = time.monotonic() + 10
        while not any(json.loads(b)["event"] == "job.finished" for b, _ in Receiver.events):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body, headers = Receiver.events[-1]
        event = json.loads(body)
        assert event["event"] == "job.finished" and event["status"] == "succeeded" and event["items_done"] == 3
        assert verify_signature("cb-secret", body, headers.get("X-RagRay-Signature"))
        assert not verify_signature("other", body, headers.get("X-RagRay-Signature"))
    finally:
        server.shutdown()


def test_metrics_and_body_cap(make_settings, fake_store):
    rig = build_rig(make_settings(max_request_bytes=2048), fake_store)
    rig.client.get("/health")
    r = rig.client.post("/query", headers=rig.auth(), json={"query": "x" * 5000})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    text = rig.client.get("/metrics", headers=rig.auth()).text
    assert 'rag_http_requests_total{method="GET",route="/health",status="200"} 1' in text
    assert 'rag_llm_breaker_state{provider="fake:echo"} 0' in text
    assert rig.client.get("/metrics", headers=rig.auth("alice")).status_code == 403
