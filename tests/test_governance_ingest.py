"""Enrichment as an ingest stage: real documents and synthetic PII through the real stages (LocalExecutor,
FakeEmbedder, Milvus Lite); labels land in chunk metadata and the scalar ``sensitivity``; per-source levels; the
filter expressions the labels are queried with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.enrich import GovernancePolicy
from rag_ray.errors import InvalidInput
from rag_ray.ingest.executor import LeveledStages
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.ingest.stages import EnrichChunks
from rag_ray.metadata import MetadataDB
from rag_ray.retrieval.filters import retrieval_filter
from rag_ray.runtime import IngestStages
from rag_ray.store.filters import FilterClause, literal, render_clause, user_filter
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Principal
from tests.governance_fixtures import CARD, RRN, write_fixtures
from tests.ingest_helpers import local_ingestor

REAL_DOCS = ("ko_namuwiki_profile_excerpt.txt", "en_war_and_peace_1p.txt", "ko_babel_user_handbook.md",
             "en_ust_handbook_1p.docx")


@pytest.fixture
def corpus(tmp_path: Path, shared_data: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in REAL_DOCS:
        shutil.copy(shared_data / "documents" / name, docs / name)
    write_fixtures(docs / "pii")
    return docs


def ingest(db: MetadataDB, store: ChunkStore, path: Path, level: str | None = None) -> Any:
    ingestor = local_ingestor(db, store)
    return ingestor.run(FileIngestRequest(path=path, acl=Acl("u-owner", (), "public"), enrichment_level=level))


def chunks_of(store: ChunkStore, name: str) -> list[dict[str, Any]]:
    rows = store.query(f"source_uri like {literal('%' + name)}", ("id", "sensitivity", "metadata", "text"))
    assert rows, name
    return rows


def test_labels_land_on_chunks(tmp_path: Path, corpus: Path, fake_store: ChunkStore) -> None:
    db = MetadataDB(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    summary = ingest(db, fake_store, corpus)
    assert summary.status == "succeeded" and not summary.errors
    for row in chunks_of(fake_store, "ko_namuwiki_profile_excerpt.txt"):
        assert row["metadata"]["language"] == "ko" and row["metadata"]["pii_types"] == []
        assert row["sensitivity"] == row["metadata"]["sensitivity"]
    assert {r["metadata"]["language"] for r in chunks_of(fake_store, "en_war_and_peace_1p.txt")} == {"en"}
    assert {r["metadata"]["language"] for r in chunks_of(fake_store, "en_ust_handbook_1p.docx")} == {"en"}
    [hr] = chunks_of(fake_store, "ko_hr_record.txt")
    assert hr["sensitivity"] == "restricted" and RRN in hr["text"]  # stored unmasked; masked on the way out
    assert hr["metadata"]["pii_types"] == ["phone", "rrn"] and "contains-national-id" in hr["metadata"][
        "compliance_tags"]
    assert hr["metadata"]["file_type"] == "txt"  # the parser's metadata survives the merge
    [billing] = chunks_of(fake_store, "en_billing.txt")
    assert billing["metadata"]["pii_counts"] == {"card": 1, "email": 1} and billing["sensitivity"] == "restricted"
    assert chunks_of(fake_store, "ko_contacts.txt")[0]["sensitivity"] == "confidential"
    assert chunks_of(fake_store, "en_notice.txt")[0]["sensitivity"] == "internal"
    db.dispose()


@pytest.mark.parametrize(("level", "present", "absent"), [
    ("off", set(), {"language", "pii_types", "sensitivity"}),
    ("basic", {"language"}, {"pii_types", "sensitivity"}),
    ("comprehensive", {"language", "pii_types", "sensitivity", "entities"}, set()),
])
def test_per_source_level(tmp_path: Path, fake_store: ChunkStore, level: str, present: set[str],
                          absent: set[str]) -> None:
    db = MetadataDB(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    source = write_fixtures(tmp_path / "src", ("en_billing.txt",))
    assert ingest(db, fake_store, source, level).status == "succeeded"
    [row] = chunks_of(fake_store, "en_billing.txt")
    assert present <= set(row["metadata"]) and not absent & set(row["metadata"])
    assert row["sensitivity"] == ("restricted" if "sensitivity" in present else "public")
    db.dispose()


def test_bad_level_is_refused_before_a_job_exists(tmp_path: Path, fake_store: ChunkStore) -> None:
    db = MetadataDB(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    source = write_fixtures(tmp_path / "src", ("en_notice.txt",))
    with pytest.raises(InvalidInput) as err:
        local_ingestor(db, fake_store).submit(FileIngestRequest(path=source, enrichment_level="max"))
    assert err.value.field == "enrichment_level"
    db.dispose()


def test_stage_factories_pick_the_level(make_settings: Any) -> None:
    stages = IngestStages(make_settings(enrichment_level="basic"), 64)
    assert stages.enrich().level == "basic" and stages.enrich("off").level == "off"
    assert LeveledStages(stages, "comprehensive").enrich().level == "comprehensive"
    assert LeveledStages(stages, None).enrich().level == "basic"


def test_enrich_stage_keeps_marker_rows_and_columns() -> None:
    batch = {"kind": ["chunk", "error"], "text": [f"card {CARD}", ""], "metadata_json": ["{}", '{"x": 1}'],
             "id": ["a", ""]}
    out = EnrichChunks("standard")(batch)
    assert json.loads(out["metadata_json"][0])["pii_types"] == ["card"]
    assert out["metadata_json"][1] == '{"x": 1}' and out["id"] == ["a", ""]
    assert EnrichChunks("off")(batch) is batch


def test_ray_executor_runs_the_enrich_step(ray_local: None, make_settings: Any, tmp_path: Path) -> None:
    from jobs.ray_executor import RayDataExecutor

    settings = make_settings()
    source = write_fixtures(tmp_path / "src", ("ko_contacts.txt",))
    task = {"path": str(source / "ko_contacts.txt"), "doc_id": "doc-ray", "source_uri": "mem://ko_contacts",
            "content_hash": "x", "owner_id": "u1", "group_ids_json": "[]", "visibility": "public",
            "metadata_json": "{}"}
    store = ChunkStore.connect(settings.milvus_address, settings.collection, FakeEmbedder().dimension)
    results: list[Any] = []
    RayDataExecutor().run([task], IngestStages(settings, 64), results.append, lambda: None)
    assert sum(len(b["id"]) for b in results) == 1
    [row] = store.query('doc_id == "doc-ray"', ("id", "sensitivity", "metadata"))
    assert row["sensitivity"] == "confidential" and row["metadata"]["language"] == "ko"
    store.drop()


# ---- expressions: exact text, and they run on Milvus Lite ----
def test_json_array_fields_render_json_contains() -> None:
    assert user_filter([{"field": "pii_types", "op": "contains", "value": "rrn"}]) == (
        '(json_contains(metadata["pii_types"], "rrn"))')
    assert user_filter([{"field": "compliance_tags", "op": "contains_any", "value": ["a", 'b"']}]) == (
        '(json_contains_any(metadata["compliance_tags"], ["a", "b\\""]))')
    assert render_clause(FilterClause("group_ids", "contains", "eng")) == 'array_contains(group_ids, "eng")'
    with pytest.raises(InvalidInput):
        render_clause(FilterClause("pii_types", "eq", "rrn"))


def test_retrieval_filter_ands_the_policy() -> None:
    bob = Principal("u-bob", group_ids=("g1",))
    policy = GovernancePolicy()
    assert retrieval_filter(bob, {"language": "ko"}, policy) == (
        '(owner_id == "u-bob" or visibility == "public" or (visibility == "group" and '
        '(group_key like "%|6731|%"))) and (owner_id == "u-bob" or sensitivity not in '
        '["confidential", "restricted"] or (sensitivity in ["confidential"] and '
        '(group_key like "%|6731|%"))) and ((metadata["language"] == "ko"))')
    assert retrieval_filter(bob, {"language": "ko"}, policy, keyed_groups=False).count(
        'array_contains_any(group_ids, ["g1"])') == 2
    assert retrieval_filter(bob, None, None) == retrieval_filter(bob)  # no policy: the ACL alone
    assert retrieval_filter(Principal("root", role="admin"), None, policy) == ""
    assert retrieval_filter(bob, None, GovernancePolicy(owner_only=frozenset(), group_only=frozenset())) == (
        retrieval_filter(bob))


def test_label_filters_run_on_milvus_lite(tmp_path: Path, fake_store: ChunkStore) -> None:
    db = MetadataDB(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    ingest(db, fake_store, write_fixtures(tmp_path / "src"))

    def names(principal: Principal, raw: Any) -> set[str]:
        rows = fake_store.query(retrieval_filter(principal, raw, GovernancePolicy()), ("id", "source_uri"))
        return {Path(r["source_uri"]).name for r in rows}

    owner, other = Principal("u-owner"), Principal("u-other")
    assert names(owner, [{"field": "pii_types", "op": "contains", "value": "rrn"}]) == {"ko_hr_record.txt"}
    assert names(owner, [{"field": "pii_types", "op": "contains_any", "value": ["card", "ip"]}]) == {
        "en_billing.txt", "en_notice.txt"}
    assert names(owner, [{"field": "compliance_tags", "op": "contains", "value": "contains-contact-info"}]) == {
        "ko_hr_record.txt", "en_billing.txt", "ko_contacts.txt"}
    assert names(owner, {"language": "ko", "sensitivity": "restricted"}) == {"ko_hr_record.txt"}
    assert names(other, None) == {"en_notice.txt"}  # public visibility, but restricted/confidential are guarded
    assert names(other, [{"field": "pii_types", "op": "contains", "value": "rrn"}]) == set()
    db.dispose()
