"""The governance policy over HTTP (in-process app, real Milvus Lite, FakeEmbedder, echoing FakeLLM).

Documents are ingested through the real stages with their enrichment labels. A normal user never gets a
restricted chunk they do not own (even with public visibility) nor an unmasked PII value, on any retrieval route
the app has; the owner and admins do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_ray.enrich import GovernancePolicy
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.types import Acl
from tests.api_helpers import ALICE, ApiRig, build_rig
from tests.governance_fixtures import (
    CARD,
    CONTACT_CANARY,
    EMAIL,
    IP,
    KO_EMAIL,
    NOTICE_CANARY,
    PHONE,
    RESTRICTED_CANARY,
    RRN,
    write_fixtures,
)
from tests.ingest_helpers import local_ingestor

RAW_PII = (RRN, CARD, EMAIL, KO_EMAIL, PHONE, IP)
STRATEGIES = ("dense", "sparse", "hybrid")


@pytest.fixture
def rig(make_settings: Any, fake_store: Any, tmp_path: Path) -> Iterator[ApiRig]:
    built = build_rig(make_settings(), fake_store, policy=GovernancePolicy())
    ingestor = local_ingestor(built.db, fake_store)
    # restricted, owned by alice, public visibility: only alice and admins may read it
    ingestor.run(FileIngestRequest(path=write_fixtures(tmp_path / "alice", ("ko_hr_record.txt", "en_billing.txt")),
                                   acl=Acl(ALICE.user_id, (), "public")))
    # confidential contact sheet for group g-team (alice's group), readable by the group only
    ingestor.run(FileIngestRequest(path=write_fixtures(tmp_path / "team", ("ko_contacts.txt",)),
                                   acl=Acl("system", ("g-team",), "group")))
    # internal notice with an IP address, public: everyone reads it, non-admins masked
    ingestor.run(FileIngestRequest(path=write_fixtures(tmp_path / "public", ("en_notice.txt",)),
                                   acl=Acl("system", (), "public")))
    fake_store.flush()
    with built.client:
        yield built


def query(rig: ApiRig, who: str, text: str, mode: str = "search", strategy: str = "hybrid",
          filters: Any = None) -> dict[str, Any]:
    response = rig.client.post("/query", headers=rig.auth(who), json={
        "query": text, "mode": mode, "k": 20, "search_strategy": strategy, "filters": filters})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def sources(body: dict[str, Any]) -> set[str]:
    return {Path(s["source"]).name for s in body["sources"]}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_normal_user_never_gets_restricted_chunks_or_raw_pii(rig: ApiRig, strategy: str) -> None:
    for mode in ("search", "rag"):
        for text in (RESTRICTED_CANARY, f"{RRN} 주민등록번호", f"card {CARD}", CONTACT_CANARY, NOTICE_CANARY):
            body = query(rig, "bob", text, mode, strategy)
            assert sources(body) <= {"en_notice.txt"}, (mode, text)
            shown = str(body).replace(text, "")  # the caller's own words echoed back are no leak
            assert RESTRICTED_CANARY not in shown and not [v for v in RAW_PII if v in shown], (mode, text)


def test_owner_and_admin_read_restricted(rig: ApiRig) -> None:
    assert {"ko_hr_record.txt", "en_billing.txt"} <= sources(query(rig, "alice", RESTRICTED_CANARY))
    admin = query(rig, "admin", RESTRICTED_CANARY)
    assert {"ko_hr_record.txt", "en_billing.txt"} <= sources(admin)
    texts = " ".join(s["text"] for s in admin["sources"])
    assert RRN in texts and CARD in texts  # admins see PII unmasked


def test_owner_sees_own_pii_unmasked_group_member_masked(rig: ApiRig) -> None:
    own = query(rig, "alice", RESTRICTED_CANARY, strategy="sparse")
    hr = next(s for s in own["sources"] if s["source"].endswith("ko_hr_record.txt"))
    assert RRN in hr["text"]
    team = query(rig, "alice", CONTACT_CANARY, strategy="sparse")
    contact = next(s for s in team["sources"] if s["source"].endswith("ko_contacts.txt"))
    assert KO_EMAIL not in contact["text"] and "[EMAIL]" in contact["text"] and "[PHONE]" in contact["text"]
    assert contact["metadata"]["sensitivity"] == "confidential"


def test_public_pii_is_masked_for_users_not_admins(rig: ApiRig) -> None:
    bob = query(rig, "bob", NOTICE_CANARY, mode="rag", strategy="sparse")
    assert sources(bob) == {"en_notice.txt"} and IP not in str(bob) and "[IP]" in bob["sources"][0]["text"]
    assert "[IP]" in bob["answer"]  # the echoing LLM saw masked context only
    admin = query(rig, "admin", NOTICE_CANARY, mode="rag", strategy="sparse")
    assert IP in admin["sources"][0]["text"] and IP in admin["answer"]


def test_answer_is_masked_even_when_the_question_carries_pii(rig: ApiRig) -> None:
    body = query(rig, "bob", f"who owns {EMAIL} and {PHONE}?", mode="rag")
    assert EMAIL not in body["answer"] and PHONE not in body["answer"] and "[EMAIL]" in body["answer"]


def test_label_filters_over_http(rig: ApiRig) -> None:
    pii = [{"field": "pii_types", "op": "contains_any", "value": ["rrn", "card"]}]
    assert sources(query(rig, "admin", "record", filters=pii)) == {"ko_hr_record.txt", "en_billing.txt"}
    assert sources(query(rig, "bob", "record", filters=pii)) == set()
    assert sources(query(rig, "admin", "notice", filters={"language": "ko"})) == {"ko_hr_record.txt",
                                                                                  "ko_contacts.txt"}
    assert sources(query(rig, "alice", "contact", filters={"sensitivity": "confidential"})) == {"ko_contacts.txt"}
    tags = [{"field": "compliance_tags", "op": "contains", "value": "contains-financial-id"}]
    assert sources(query(rig, "alice", "card", filters=tags)) == {"en_billing.txt"}


@pytest.mark.parametrize(("path", "body"), [
    ("/generate/rag", {"query": RESTRICTED_CANARY, "retrieval_config": {"k": 20, "search_strategy": "hybrid"},
                       "generation_config": {"mode": "single"}}),
    ("/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": RESTRICTED_CANARY}]}),
])
def test_other_rag_routes(rig: ApiRig, path: str, body: dict[str, Any]) -> None:
    paths = rig.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    if "post" not in paths.get(path, {}):
        pytest.skip(f"{path} not in this app")
    bob = rig.client.post(path, headers=rig.auth("bob"), json=body)
    assert bob.status_code == 200, bob.text
    shown = bob.text.replace(RESTRICTED_CANARY, "")
    assert "ko_hr_record" not in shown and "en_billing" not in shown and not [v for v in RAW_PII if v in shown]
    admin = rig.client.post(path, headers=rig.auth("admin"), json=body)
    assert admin.status_code == 200 and "ko_hr_record" in admin.text
