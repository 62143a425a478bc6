"""The leak suite over chunks stamped from source permissions: the same probes as ``test_leaks`` (every retrieval
route, every user, hostile filters), over canaries ingested from files (owner / group / mode through
``RAG_SOURCE_ACL_MAP``) and from database rows (owner / group columns) instead of chunks written with a known ACL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore
from tests.access_fixtures import DEFAULT_USERS, World
from tests.source_acl_fixtures import ROOT, acl_map, build_source_world
from tests.test_leaks import GENERIC_QUERY, HOSTILE_FILTERS, PROBES, Tally, check_recall, run_suite

pytest_plugins = ["tests.access_fixtures"]


@pytest.fixture
def source_world(make_settings: Any, identity_db: MetadataDB, fake_store: ChunkStore,
                 tmp_path: Path) -> Iterator[World]:
    settings = make_settings(source_acl_map=acl_map(), enrichment_level="off")
    built = build_source_world(settings, identity_db, fake_store, tmp_path)
    with built.client:
        yield built


def test_no_leaks_on_chunks_stamped_from_source_permissions(source_world: World) -> None:
    world = source_world
    queries = [(GENERIC_QUERY, f) for f in HOSTILE_FILTERS] + [(d.canary, None) for d in world.docs]
    tally, failures = Tally(), []
    run_suite(world, queries, tally, failures)
    recall_checks = check_recall(world, failures)
    print(f"\nsource-permission leak suite: probes={tally.probes} leaks={tally.leaks} recall_checks={recall_checks} "
          f"routes_probed={len(PROBES) - tally.skipped_routes}/{len(PROBES)} docs={len(world.docs)} root={ROOT}")
    for name, counts in tally.statuses.items():
        print(f"  {name}: {dict(counts)}")
    assert not failures, "\n".join(failures[:20])
    assert tally.leaks == 0
    assert tally.probes >= len(DEFAULT_USERS) * len(queries) * 6


def test_the_source_layout_covers_every_acl_branch(source_world: World) -> None:
    """Owner-only, group, public and nobody-but-admins documents, from files and from rows."""
    world = source_world
    visible = {u.username: {d.name for d in world.docs if world.visible(u.username, d)} for u in DEFAULT_USERS}
    assert visible["admin"] == {d.name for d in world.docs}
    assert {"src_alice_private", "src_alice_eng", "row_carol_eng"} <= visible["alice"]
    assert {"row_dave_private", "src_world", "row_memo_public"} <= visible["dave"]
    assert "row_nobody" not in set().union(*(v for k, v in visible.items() if k != "admin"))
    assert "src_alice_private" not in visible["bob"] | visible["carol"] | visible["dave"] | visible["erin"]
    assert "row_sales_hr" in visible["carol"] and "row_sales_hr" in visible["erin"]
    if ROOT:  # distinct Unix owners and groups
        assert "src_bob_sales" in visible["carol"] and "src_bob_sales" not in visible["alice"]
        assert "src_hr" in visible["erin"] and "src_stranger_other" not in visible["erin"]
