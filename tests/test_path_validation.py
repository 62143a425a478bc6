"""Paths the caller names are validated (NUL bytes, overlong names, loops: 422 naming ``directory``; outside the
allowed roots: 403), and a bad entry inside a directory is a per-file error on the job, never the job's failure.

Driven through ``POST /extract/filesystem`` with real SQLite and Milvus Lite; jobs run in the app's own threads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rag_ray.errors import InvalidInput
from rag_ray.ingest.scan import MAX_NAME_BYTES, check_path
from tests.api_helpers import ApiRig, build_rig, inbox
from tests.test_api_jobs import wait_job


@pytest.fixture
def rig(make_settings: Any, fake_store: Any) -> ApiRig:
    return build_rig(make_settings(), fake_store)


def _extract(rig: ApiRig, directory: str) -> Any:
    """JSON with ASCII escapes, so a lone surrogate travels as the client sent it (httpx would refuse it)."""
    return rig.client.post("/extract/filesystem", content=json.dumps({"directory": directory}),
                           headers={**rig.auth(), "Content-Type": "application/json"})


def test_malformed_directories_are_422_naming_directory(rig: ApiRig) -> None:
    root = inbox(rig.settings)
    (root / "loop").symlink_to(root / "loop")
    cases = {
        "NUL byte": f"{root}/a\x00b",
        "300-character name": f"{root}/{'a' * 300}",
        "path over 4096 bytes": "/" + "/".join(["가" * 80] * 18),  # 1,458 characters pass the schema; 4,338 bytes
        "lone surrogate": f"{root}/\ud800",
        "symlink loop": f"{root}/loop",
    }
    for what, directory in cases.items():
        response = _extract(rig, directory)
        assert response.status_code == 422, f"{what}: {response.status_code} {response.text}"
        assert response.json()["field"] == "directory", f"{what}: {response.text}"
    outside = _extract(rig, "/etc")
    assert outside.status_code == 403 and outside.json()["field"] == "directory"


def test_check_path_limits() -> None:
    assert check_path("/" + "a" * MAX_NAME_BYTES) == Path("/" + "a" * MAX_NAME_BYTES)
    with pytest.raises(InvalidInput, match="longer than 255 bytes"):
        check_path("/" + "é" * 128)  # 128 characters, 256 bytes


def _mixed_directory(root: Path, outside: Path) -> tuple[Path, dict[str, str]]:
    """Two good files and one entry of each bad kind; returns the directory and the bad entries' names."""
    docs = root / "mixed"
    docs.mkdir(parents=True)
    (docs / "good.txt").write_text("alpha bravo charlie: the good plain text file")
    (docs / "notes.md").write_text("# Notes\n\ndelta echo foxtrot: the good markdown file")
    outside.mkdir()
    (outside / "secret.txt").write_text("the secret outside the allowed roots")
    (docs / "link_out.txt").symlink_to(outside / "secret.txt")
    (docs / "broken.txt").symlink_to(docs / "missing.txt")
    (docs / "loop.txt").symlink_to(docs / "loop.txt")
    os.mkfifo(docs / "pipe.txt")  # reading it would block the job forever
    bad = {"link_out.txt": "outside the allowed roots", "broken.txt": "No such file", "loop.txt": "loop",
           "pipe.txt": "not a regular file"}
    if os.geteuid() != 0:  # root reads every file: an unreadable one cannot be made
        (docs / "locked.txt").write_text("nobody may read this")
        (docs / "locked.txt").chmod(0)
        bad["locked.txt"] = "Permission denied"
    return docs, bad


def test_bad_entries_are_per_file_errors_and_the_rest_is_ingested(rig: ApiRig, tmp_path: Path) -> None:
    docs, bad = _mixed_directory(inbox(rig.settings), tmp_path / "outside")
    response = _extract(rig, str(docs))
    assert response.status_code == 202, response.text
    job = wait_job(rig, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    errors = {Path(e["item"]).name: e["error"] for e in job["errors"]}
    assert set(errors) == set(bad), errors
    for name, reason in bad.items():
        assert reason in errors[name], (name, errors[name])
    assert job["errors_count"] == len(bad) and job["items_done"] == job["items_total"] == 2 + len(bad)
    listed = rig.client.get("/documents", headers=rig.auth()).json()["documents"]
    assert sorted(Path(d["source"]).name for d in listed) == ["good.txt", "notes.md"]
    texts = " ".join(r["text"] for r in rig.store.query("", ("id", "text")))
    assert "alpha bravo" in texts and "delta echo" in texts and "secret" not in texts


def test_a_file_that_went_bad_keeps_what_was_ingested(rig: ApiRig) -> None:
    docs = inbox(rig.settings) / "later"
    docs.mkdir(parents=True)
    (docs / "stays.txt").write_text("golf hotel india")
    (docs / "breaks.txt").write_text("juliet kilo lima")
    first = wait_job(rig, _extract(rig, str(docs)).json()["job_id"])
    assert first["status"] == "succeeded" and first["errors_count"] == 0, first
    before = rig.store.count()
    (docs / "breaks.txt").unlink()
    (docs / "breaks.txt").symlink_to(docs / "gone.txt")  # still listed, no longer readable
    second = wait_job(rig, _extract(rig, str(docs)).json()["job_id"])
    assert second["status"] == "succeeded" and second["errors_count"] == 1, second
    assert Path(second["errors"][0]["item"]).name == "breaks.txt"
    assert rig.store.count() == before, "the broken entry's chunks are kept, not deleted as if the file were gone"
    listed = rig.client.get("/documents", headers=rig.auth()).json()["documents"]
    assert sorted(Path(d["source"]).name for d in listed) == ["breaks.txt", "stays.txt"]
