"""Enricher levels, batch merging for Ray Data, and the labels working as Milvus filters end to end."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from rag_ray.enrich import Enricher, GovernancePolicy, SensitivityRules, policy_filter
from rag_ray.errors import InvalidInput
from rag_ray.store.filters import access_filter, and_all, user_filter
from rag_ray.types import Acl, Chunk, Principal, make_chunk_id, sha256_text

SEED_EXAMPLE = "이 문서는 기밀 정보를 포함합니다. 연락처: john@company.com"


def test_levels_add_keys() -> None:
    assert Enricher("basic").enrich(SEED_EXAMPLE) == {"language": "ko"}
    standard = Enricher("standard").enrich(SEED_EXAMPLE)
    assert standard == {"language": "ko", "pii_types": ["email"], "pii_counts": {"email": 1},
                        "sensitivity": "confidential", "compliance_tags": ["contains-PII", "contains-contact-info"]}
    comprehensive = Enricher("comprehensive").enrich(SEED_EXAMPLE)
    assert {k: v for k, v in comprehensive.items() if k != "entities"} == standard
    assert set(comprehensive["entities"]) == {"person", "organization", "location", "misc"}


def test_standard_on_english_with_restricted_pii() -> None:
    labels = Enricher().enrich("Customer card 4111 1111 1111 1111, call 010-1234-5678 or 010-9876-5432.")
    assert labels["language"] == "en"
    assert labels["pii_types"] == ["card", "phone"] and labels["pii_counts"] == {"card": 1, "phone": 2}
    assert labels["sensitivity"] == "restricted"
    assert labels["compliance_tags"] == ["contains-PII", "contains-contact-info", "contains-financial-id"]


def test_public_text_is_public() -> None:
    labels = Enricher().enrich("All human beings are born free and equal in dignity and rights.")
    assert labels == {"language": "en", "pii_types": [], "pii_counts": {}, "sensitivity": "public",
                      "compliance_tags": []}


def test_custom_rules() -> None:
    enricher = Enricher("standard", SensitivityRules(keywords={"restricted": ["project falcon"]}))
    assert enricher.enrich("Project Falcon kickoff notes")["sensitivity"] == "restricted"


def test_bad_level() -> None:
    with pytest.raises(InvalidInput) as err:
        Enricher("everything")  # type: ignore[arg-type]
    assert err.value.field == "enrichment_level"


def test_enrich_batch_merges_without_mutating() -> None:
    original = {"source": "hr", "sensitivity": "restricted"}
    batch = {"id": ["a", "b", "c"], "text": ["공개 안내문입니다.", "문의: hr@example.com", "no metadata here"],
             "metadata": [original, {"sensitivity": "public", "title": "t"}, None]}
    out = Enricher("standard").enrich_batch(batch)
    assert out["id"] == ["a", "b", "c"] and out["text"] is batch["text"]
    first, second, third = out["metadata"]
    assert original == {"source": "hr", "sensitivity": "restricted"}  # input untouched
    assert first["source"] == "hr" and first["language"] == "ko"
    assert first["sensitivity"] == "restricted"  # an upstream label is never lowered
    assert second["sensitivity"] == "confidential" and second["title"] == "t"  # ...but can be raised
    assert third["language"] == "en" and third["sensitivity"] == "public"


def test_enrich_batch_numpy_and_pipeline_rows() -> None:
    """The ingest pipeline's rows: numpy columns, metadata as JSON strings, marker rows that are not chunks."""
    batch = {"kind": np.array(["chunk", "empty"], dtype=object),
             "text": np.array(["주민번호 900101-1234567 보관", ""], dtype=object),
             "metadata_json": np.array(['{"file_type": "txt"}', '{"file_type": "pdf"}'], dtype=object)}
    out = Enricher("standard")(batch)
    meta = json.loads(out["metadata_json"][0])
    assert meta["file_type"] == "txt" and meta["pii_types"] == ["rrn"] and meta["sensitivity"] == "restricted"
    assert out["metadata_json"][1] == '{"file_type": "pdf"}'  # non-chunk rows pass through
    assert "metadata" not in out


def test_enrich_batch_rejects_bad_columns() -> None:
    enricher = Enricher()
    with pytest.raises(InvalidInput):
        enricher.enrich_batch({"text": ["a", "b"], "metadata": [{}]})
    with pytest.raises(InvalidInput) as err:
        enricher.enrich_batch({"text": ["a"], "metadata": ["not a dict"]})
    assert err.value.field == "metadata"
    with pytest.raises(InvalidInput):
        enricher.enrich_batch({"text": ["a"], "metadata_json": ["[1, 2]"]})


def test_enricher_pickles_for_ray() -> None:
    enricher = Enricher("comprehensive")
    enricher.enrich("서울에서 만났다")  # after use (Kiwi loaded, rule regexes cached)
    clone = pickle.loads(pickle.dumps(enricher))
    assert clone.enrich(SEED_EXAMPLE) == enricher.enrich(SEED_EXAMPLE)


def test_labels_filter_in_milvus(fake_store, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    """Enrich real chunks, store them in Milvus Lite, and retrieve through ACL AND policy AND user filters."""
    enricher = Enricher("standard")
    rows = [  # (text, owner, groups, visibility)
        ("모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다.", "alice", (), "public"),
        ("All human beings are born free and equal in dignity and rights.", "alice", (), "public"),
        ("[대외비] 인사팀 연락처 hr@example.com", "alice", ("hr",), "public"),
        ("고객 주민번호 900101-1234567", "alice", ("hr",), "public"),
        ("Internal use only: roadmap draft", "bob", (), "public"),
    ]
    chunks = []
    for i, (text, owner, groups, visibility) in enumerate(rows):
        digest = sha256_text(text)
        chunks.append(Chunk(make_chunk_id("doc", i, digest), "doc", "mem://doc", i, text, digest,
                            metadata=enricher.enrich_metadata(text, {"file_type": "txt"}),
                            acl=Acl(owner, groups, visibility)))  # type: ignore[arg-type]
    fake_store.upsert(chunks, fake_embedder.embed([c.text for c in chunks], input_type="document"))
    fake_store.flush()

    def visible(principal: Principal, raw_filters: object = None) -> list[int]:
        expr = and_all(access_filter(principal), policy_filter(principal, GovernancePolicy()), user_filter(raw_filters))
        found = fake_store.query(expr, fields=("id", "chunk_index"))
        return sorted(r["chunk_index"] for r in found)

    assert visible(Principal("carol")) == [0, 1, 4]  # confidential and restricted hidden from outsiders
    assert visible(Principal("dave", group_ids=("hr",))) == [0, 1, 2, 4]  # group sees confidential, not restricted
    assert visible(Principal("alice")) == [0, 1, 2, 3, 4]  # the owner sees all of hers
    assert visible(Principal("root", role="admin")) == [0, 1, 2, 3, 4]
    assert visible(Principal("alice"), {"language": "ko"}) == [0, 2, 3]
    assert visible(Principal("alice"), {"sensitivity": "internal"}) == [4]
    assert visible(Principal("alice"), [{"field": "pii_types", "op": "contains", "value": "rrn"}]) == [3]
    assert visible(Principal("alice"), [{"field": "compliance_tags", "op": "contains",
                                         "value": "contains-contact-info"}]) == [2]


def test_real_documents_standard(shared_data: Path) -> None:
    enricher = Enricher("standard")
    ko = enricher.enrich((shared_data / "documents" / "ko_namuwiki_profile_excerpt.txt").read_text(encoding="utf-8"))
    assert ko["language"] == "ko" and ko["pii_types"] == [] and ko["sensitivity"] == "public"
    en = enricher.enrich((shared_data / "documents" / "en_war_and_peace_1p.txt").read_text(encoding="utf-8"))
    assert en["language"] == "en" and en["sensitivity"] == "public"


def test_ray_data_map_batches(ray_local) -> None:  # type: ignore[no-untyped-def]
    import ray

    items = [{"text": "문의: hr@example.com", "metadata_json": "{}", "kind": "chunk"},
             {"text": "Plain English text about dignity and rights.", "metadata_json": "{}", "kind": "chunk"}]
    ds = ray.data.from_items(items).map_batches(Enricher, fn_constructor_kwargs={"level": "standard"},
                                                batch_size=16, concurrency=1, num_cpus=0.5)
    rows = sorted(ds.take_all(), key=lambda r: r["text"])
    labels = [json.loads(r["metadata_json"]) for r in rows]
    assert [m["language"] for m in labels] == ["en", "ko"]
    assert labels[1]["pii_types"] == ["email"] and labels[1]["sensitivity"] == "confidential"
