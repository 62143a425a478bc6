"""`rag-cli data status` label counts and `rag-cli data enrich` (relabel without re-embedding), driven through
the real root app with env vars pointing at the test Milvus Lite and a SQLite metadata DB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rag_ray.cli.main import app
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl
from tests.governance_fixtures import write_fixtures
from tests.ingest_helpers import local_ingestor

runner = CliRunner()


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings()  # type: ignore[no-any-return]


def env_of(settings: Settings) -> dict[str, str]:
    return {"RAG_DATA_DIR": str(settings.data_dir), "MILVUS_URI": settings.milvus_address,
            "RAG_COLLECTION": settings.collection, "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow",
            "LLM_PROVIDER": "fake", "LLM_MODEL": "echo", "APP_ENV": "test", "SECRET_KEY": "s" * 40,
            "RAG_ENRICHMENT_LEVEL": "standard"}


def cli(settings: Settings, *args: str) -> Any:
    return runner.invoke(app, ["data", *args], env=env_of(settings))


def ingest(settings: Settings, store: ChunkStore, source: Path, level: str) -> None:
    db = MetadataDB(settings.metadata_url)
    local_ingestor(db, store).run(FileIngestRequest(path=source, acl=Acl("u1", (), "public"), enrichment_level=level))
    store.flush()
    db.dispose()


def vectors(store: ChunkStore) -> dict[str, np.ndarray]:
    return {r["id"]: np.asarray(r["vector"], dtype=np.float32) for r in store.query("", ("id", "vector"))}


@pytest.fixture
def store(settings: Settings) -> Any:
    store = ChunkStore.connect(settings.milvus_address, settings.collection, FakeEmbedder().dimension)
    yield store
    store.drop()


def test_status_counts_labels_per_source(settings: Settings, store: ChunkStore, tmp_path: Path) -> None:
    ingest(settings, store, write_fixtures(tmp_path / "labelled"), "standard")
    ingest(settings, store, write_fixtures(tmp_path / "plain", ("en_notice.txt",)), "off")
    result = cli(settings, "status", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["labels"]["sensitivity"] == {"restricted": 2, "confidential": 1, "internal": 1, "public": 1}
    assert report["labels"]["language"] == {"ko": 2, "en": 2, "-": 1}
    assert report["labels"]["pii_types"] == {"rrn": 1, "card": 1, "email": 2, "phone": 2, "ip": 1}
    hr = report["labels_by_source"][str(tmp_path / "labelled" / "ko_hr_record.txt")]
    assert hr == {"sensitivity": {"restricted": 1}, "language": {"ko": 1}, "pii_types": {"phone": 1, "rrn": 1}}
    table = cli(settings, "status")
    assert table.exit_code == 0 and "labels by source" in table.output and "restricted=2" in table.output


def test_enrich_relabels_without_changing_vectors(settings: Settings, store: ChunkStore, tmp_path: Path) -> None:
    ingest(settings, store, write_fixtures(tmp_path / "src"), "off")
    before = vectors(store)
    assert {r["sensitivity"] for r in store.query("", ("id", "sensitivity"))} == {"public"}
    result = cli(settings, "enrich", "--source", str(tmp_path / "src" / "ko_"), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["chunks"] == 2  # ko_hr_record, ko_contacts
    rows = {Path(r["source_uri"]).name: r for r in store.query("", ("id", "source_uri", "sensitivity", "metadata"))}
    assert rows["ko_hr_record.txt"]["sensitivity"] == "restricted"
    assert rows["ko_contacts.txt"]["metadata"]["pii_types"] == ["email", "phone"]
    assert "language" not in rows["en_billing.txt"]["metadata"]  # outside the prefix: untouched
    after = vectors(store)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)

    everything = cli(settings, "enrich", "--source", str(tmp_path / "src"), "--level", "comprehensive")
    assert everything.exit_code == 0 and "relabelled 4 chunks" in everything.output
    assert all("entities" in r["metadata"] for r in store.query("", ("id", "metadata")))
    assert all(np.array_equal(before[k], v) for k, v in vectors(store).items())


def test_enrich_reset_can_lower_and_unknown_source_fails(settings: Settings, store: ChunkStore,
                                                          tmp_path: Path) -> None:
    ingest(settings, store, write_fixtures(tmp_path / "src", ("en_billing.txt",)), "standard")
    [row] = store.query("", ("id", "doc_id", "sensitivity"))
    assert row["sensitivity"] == "restricted"
    kept = cli(settings, "enrich", "--source", row["doc_id"], "--level", "basic")  # by document id
    assert kept.exit_code == 0 and store.query("", ("id", "sensitivity"))[0]["sensitivity"] == "restricted"
    reset = cli(settings, "enrich", "--source", row["doc_id"], "--level", "basic", "--reset")
    assert reset.exit_code == 0
    [after] = store.query("", ("id", "sensitivity", "metadata"))
    assert after["sensitivity"] == "public" and set(after["metadata"]) & {"pii_types", "sensitivity"} == set()
    missing = cli(settings, "enrich", "--source", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1 and "relabelled 0 chunks" in missing.output
    bad = cli(settings, "enrich", "--source", row["doc_id"], "--level", "max")
    assert bad.exit_code == 2 and "enrichment_level" in bad.output
