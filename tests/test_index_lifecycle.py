"""Index lifecycle (issue 19): rebuild into a new collection while queries keep hitting the live one through the
alias, switch behind the evaluation gate, roll back, ACLs on the rebuilt collection, re-chunking from sources.

Real Milvus Lite and SQLite; fake embedders: ``fake:hash-bow`` (the live model), ``fake:hash-bow-v2`` (as good, other
vectors, 96-d) and ``fake:constant`` (useless). Queries go through the in-process app's ``/query``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rag_ray.api.app import create_app
from rag_ray.cli.main import app as cli_app
from rag_ray.config import Settings
from rag_ray.embedding.fake import _create as fake_model
from rag_ray.errors import ConfigError, Conflict
from rag_ray.index.catalog import IndexCatalog
from rag_ray.index.gate import EvalGate
from rag_ray.index.lifecycle import IndexLifecycle, RebuildRequest
from rag_ray.index.records import CANCELLED, LIVE, READY, STANDBY
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.metadata import MetadataDB
from rag_ray.store.filters import access_filter
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk, make_chunk_id, sha256_text
from tests.access_fixtures import DEFAULT_USERS, build_world, reference_visible
from tests.api_helpers import compose
from tests.ingest_helpers import local_ingestor
from tests.job_helpers import wait_until

pytest_plugins = ["tests.access_fixtures"]

WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kelp",
         "lumen", "maple", "nectar", "onyx", "pepper", "quartz", "raven", "saffron", "tundra", "umber", "violet",
         "willow", "xenon", "yarrow", "zephyr"]
N_DOCS = 24
OLD, NEW = "fake:hash-bow", "fake:hash-bow-v2"


def doc_text(word: str, other: str) -> str:
    return f"{word} {other}x notes about {word}stone and {word}field"


def query_text(word: str) -> str:
    return f"{word}stone {word}field"


def corpus_chunks(n: int = N_DOCS) -> list[Chunk]:
    out = []
    for i in range(n):
        text = doc_text(WORDS[i], WORDS[(i * 7 + 3) % 26])
        digest = sha256_text(text)
        out.append(Chunk(make_chunk_id(f"d{i}", 0, digest), f"d{i}", f"file:///corpus/d{i}.txt", 0, text, digest,
                         {"title": f"d{i}"}, Acl("system", (), "public")))
    return out


def write_eval_set(root: Path, n: int = N_DOCS) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    queries, qrels = root / "queries.jsonl", root / "qrels.tsv"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": query_text(WORDS[i])}) + "\n" for i in range(n)))
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(n)))
    return queries, qrels


def upsert(store: ChunkStore, chunks: list[Chunk], model: str = OLD) -> None:
    embedder = fake_model(model.split(":", 1)[1])
    store.upsert(chunks, embedder.embed([c.text for c in chunks]))
    store.flush()


def score(model: str, query: str, text: str) -> float:
    embedder = fake_model(model.split(":", 1)[1])
    return float(np.dot(embedder.embed([query])[0], embedder.embed([text])[0]))


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(index_refresh_s=0)


@pytest.fixture
def live_store(settings: Settings) -> Iterator[ChunkStore]:
    """The install before aliases: RAG_COLLECTION is a plain collection. Every collection of the alias is dropped
    afterwards (dropping the alias name itself would drop whatever it points at)."""
    store = ChunkStore.connect(settings.milvus_address, settings.collection, 64, embedding_model=OLD)
    yield store
    catalog = IndexCatalog(store.client, settings.collection)
    if catalog.live_name() is not None:
        store.client.drop_alias(settings.collection)
    for name in catalog.family():
        store.client.drop_collection(name)


@pytest.fixture
def db(settings: Settings) -> Iterator[MetadataDB]:
    database = MetadataDB(settings.metadata_url)
    yield database
    database.dispose()


@dataclass
class QueryLoop:
    """Threads sending /query in a loop; every response is recorded, every non-200 is a failure."""

    client: TestClient
    queries: list[str]
    failures: list[str] = field(default_factory=list)
    seen: list[tuple[str, str, float]] = field(default_factory=list)  # (query, top chunk's doc, top score)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, offset: int) -> None:
        i = offset
        while not self.stop.is_set():
            query = self.queries[i % len(self.queries)]
            i += 1
            response = self.client.post("/query", headers={"Authorization": "Bearer alice-token"},
                                        json={"query": query, "mode": "search", "k": 3, "search_strategy": "dense"})
            with self.lock:
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:300]}")
                    continue
                top = response.json()["sources"][0]
                self.seen.append((query, top["doc_id"], float(top["score"])))

    def count(self) -> int:
        with self.lock:
            return len(self.seen) + len(self.failures)

    def saw_since(self, start: int, predicate: Callable[[str, str, float], bool]) -> bool:
        with self.lock:
            return any(predicate(*row) for row in self.seen[start:])


def model_of(query: str, doc_id: str, value: float, texts: dict[str, str]) -> str | None:
    """Which model scored (query, doc) this way (None: either)."""
    old, new = score(OLD, query, texts[doc_id]), score(NEW, query, texts[doc_id])
    if abs(old - new) < 1e-4:
        return None
    return OLD if abs(value - old) < 1e-4 else NEW if abs(value - new) < 1e-4 else "neither"


def test_queries_never_fail_across_rebuild_switch_and_rollback(settings: Settings, live_store: ChunkStore,
                                                               db: MetadataDB, tmp_path: Path) -> None:
    chunks = corpus_chunks()
    upsert(live_store, chunks)
    texts = {c.doc_id: c.text for c in chunks}
    telling = [query_text(WORDS[i]) for i in range(N_DOCS)  # queries whose top score differs between the models
               if abs(score(OLD, query_text(WORDS[i]), texts[f"d{i}"]) - score(NEW, query_text(WORDS[i]),
                                                                              texts[f"d{i}"])) > 1e-3]
    assert len(telling) >= 3
    loop = QueryLoop(TestClient(create_app(compose(settings, store=live_store))), telling)
    threads = [threading.Thread(target=loop.run, args=(n,), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    lifecycle = IndexLifecycle(settings, db)
    late = Chunk(make_chunk_id("late", 0, sha256_text("kiwi orchard")), "late", "file:///late.txt", 0,
                 "kiwi orchard", sha256_text("kiwi orchard"), {}, Acl("system", (), "public"))
    wrote: list[bool] = []

    def write_during_rebuild(_: Any) -> None:  # an ingest landing in the live collection mid-rebuild
        if not wrote:
            wrote.append(True)
            upsert(live_store, [late])

    try:
        wait_until(lambda: loop.count() >= 4, 60, "queries before the rebuild")
        summary = lifecycle.rebuild(RebuildRequest(NEW), listeners=[write_during_rebuild])
        assert summary.status == "succeeded", summary
        assert (summary.embedding_model, summary.dimension, summary.docs_synced) == (NEW, 96, N_DOCS)
        before_switch = loop.count()
        queries, qrels = write_eval_set(tmp_path / "eval")
        result = lifecycle.switch(gate=EvalGate.from_files(queries, qrels))
        assert result.gate is not None and result.gate.passed and result.synced["docs"] == 1  # the late write
        assert (result.live, result.embedding_model) == (summary.collection, NEW)
        mark = loop.count()
        wait_until(lambda: loop.saw_since(mark, lambda q, d, s: model_of(q, d, s, texts) == NEW), 60,
                   "results from the new model")
        late_hit = loop.client.post("/query", headers={"Authorization": "Bearer alice-token"},
                                    json={"query": "kiwi orchard", "mode": "search", "k": 1,
                                          "search_strategy": "dense"}).json()["sources"][0]
        assert late_hit["doc_id"] == "late" and abs(late_hit["score"] - 1.0) < 1e-4

        after = Chunk(make_chunk_id("after", 0, sha256_text("plum grove")), "after", "file:///after.txt", 0,
                      "plum grove", sha256_text("plum grove"), {}, Acl("system", (), "public"))
        upsert(live_store, [after], NEW)  # written through the alias: lands in the new live collection
        back = lifecycle.rollback()
        assert (back.live, back.previous, back.synced["docs"]) == (result.previous, result.live, 1)
        mark = loop.count()
        wait_until(lambda: loop.saw_since(mark, lambda q, d, s: model_of(q, d, s, texts) == OLD), 60,
                   "results from the old model again")
    finally:
        loop.stop.set()
        for thread in threads:
            thread.join(30)
    assert loop.failures == [], loop.failures[:5]
    assert before_switch > 4 and loop.count() > before_switch
    assert not [row for row in loop.seen if model_of(row[0], row[1], row[2], texts) == "neither"]
    old_store = lifecycle.store(lifecycle.live())
    assert old_store.count('doc_id == "after"') == 1  # written after the switch, kept by the rollback
    statuses = {s.entry.name: (s.entry.status, s.live) for s in lifecycle.statuses()}
    assert statuses == {result.previous: (LIVE, True), result.live: (STANDBY, False)}


def test_gate_refuses_a_worse_model_and_accepts_an_equal_one(settings: Settings, live_store: ChunkStore,
                                                             tmp_path: Path) -> None:
    upsert(live_store, corpus_chunks())
    queries, qrels = write_eval_set(tmp_path / "eval", 12)
    env = {"RAG_DATA_DIR": str(settings.data_dir), "MILVUS_URI": settings.milvus_address,
           "RAG_COLLECTION": settings.collection, "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow",
           "LLM_PROVIDER": "fake", "LLM_MODEL": "echo", "APP_ENV": "test", "SECRET_KEY": "s" * 40,
           "RAG_EVAL_QUERIES": str(queries), "RAG_EVAL_QRELS": str(qrels)}
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(cli_app, ["index", *args], env=env)

    worse = cli("rebuild", "--embedding", "fake:constant", "--format", "json")
    assert worse.exit_code == 0, worse.output
    refused = cli("switch")
    assert refused.exit_code == 1 and "not switched" in refused.output and "worse" in refused.output, refused.output
    listed = json.loads(cli("list", "--format", "json").stdout)
    live = next(c for c in listed if c["live"])
    assert live["embedding_model"] == OLD and live["name"].startswith(f"{settings.collection}__fake_hash_bow__")

    equal = json.loads(cli("rebuild", "--embedding", OLD, "--format", "json").stdout)
    accepted = cli("switch", equal["collection"], "--format", "json")
    assert accepted.exit_code == 0, accepted.output
    switched = json.loads(accepted.stdout)
    assert switched["live"] == equal["collection"] and switched["gate"]["passed"]
    assert switched["configure"].startswith("EMBEDDING_PROVIDER=fake EMBEDDING_MODEL=hash-bow")

    dropped = cli("drop", switched["live"], "--yes")
    assert dropped.exit_code == 2 and "live" in dropped.output  # never the live one
    constant = next(c["name"] for c in listed if c["embedding_model"] == "fake:constant")
    assert cli("drop", constant, "--yes").exit_code == 0
    assert constant not in IndexCatalog(live_store.client, settings.collection).family()
    forced = cli("switch", constant, "--force")
    assert forced.exit_code == 2 and "dropped" in forced.output, forced.output


def test_acl_filters_hold_on_the_rebuilt_collection(settings: Settings, live_store: ChunkStore,
                                                    identity_db: MetadataDB) -> None:
    """The leak suite's search probes (every user, hostile filters, each canary) and its recall check, answered by
    the rebuilt collection after the switch. The live collection predates ``group_key`` (groups matched on the
    array): the rebuild is its migration."""
    from tests.test_leaks import GENERIC_QUERY, HOSTILE_FILTERS, PROBES, Tally, seen, send

    live_store.drop()
    legacy = ChunkStore.connect(settings.milvus_address, settings.collection, 64, embedding_model=OLD,
                                keyed_groups=False)
    world = build_world(settings, identity_db, legacy)
    reopened = ChunkStore.connect(settings.milvus_address, settings.collection, 64, embedding_model=OLD)
    assert not reopened.keyed_groups  # read from the collection, not from what the server could do
    principals = {u.username: world.principal(u.username) for u in DEFAULT_USERS}
    visible = {name: {d.name for d in world.docs if reference_visible(p, world.owner_id(d), d.groups, d.visibility)}
               for name, p in principals.items()}

    def check_access_filter(store: ChunkStore) -> None:  # the access filter in Milvus: the reference model
        for name, principal in principals.items():
            rows = store.query(access_filter(principal, keyed_groups=store.keyed_groups), ("id", "doc_id"))
            assert {r["doc_id"] for r in rows} == {d.doc_id for d in world.docs if d.name in visible[name]}, name

    check_access_filter(reopened)
    lifecycle = IndexLifecycle(settings, identity_db)
    assert lifecycle.rebuild(RebuildRequest(NEW)).status == "succeeded"
    switched = lifecycle.switch(force=True)
    rebuilt = lifecycle.store(lifecycle.live())
    assert rebuilt.collection == switched.live and rebuilt.dimension == 96 and rebuilt.keyed_groups
    check_access_filter(rebuilt)
    dense, hybrid = (next(p for p in PROBES if p.name == name) for name in ("query search dense",
                                                                            "query search hybrid"))
    queries = [(GENERIC_QUERY, f) for f in HOSTILE_FILTERS[1:3]] + [(d.canary, None) for d in world.docs]
    tally, failures = Tally(), []
    with world.client:
        for spec in DEFAULT_USERS:
            hidden = [d for d in world.docs if d.name not in visible[spec.username]]
            for query, filters in queries:
                response = send(world, dense, spec.username, query, filters)
                where = f"{dense.name} as {spec.username} q={query!r} f={filters!r}"
                assert response.status_code == 200, (where, response.text[:300])
                shown = response.text.replace(query, "")
                tally.record([d.name for d in hidden if d.canary in shown or d.doc_id in shown], where, failures)
            for probe in (dense, hybrid):  # not vacuous: every document the user may read, and only those
                recall = send(world, probe, spec.username, GENERIC_QUERY, None).text
                assert seen(world, recall) == visible[spec.username], (probe.name, spec.username)
    assert not failures, failures[:10]
    assert tally.leaks == 0 and tally.probes == len(DEFAULT_USERS) * len(queries)


def test_rechunk_rebuild_cancel_and_resume(settings: Settings, live_store: ChunkStore, db: MetadataDB,
                                           tmp_path: Path) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    for i in range(6):
        (source / f"f{i}.txt").write_text(" ".join(f"{WORDS[i]} sentence number {n} about {WORDS[i + 1]}."
                                                   for n in range(40)))
    local_ingestor(db, live_store).run(FileIngestRequest(path=source, acl=Acl("u-owner", ("g-team",), "group")))
    live_store.flush()
    live_rows = live_store.count()
    lifecycle = IndexLifecycle(settings, db)
    jobs: list[str] = []

    def cancel_at_start(progress: Any) -> None:
        if not jobs:
            jobs.append(progress.job_id)
            lifecycle.jobs.cancel(progress.job_id)

    cancelled = lifecycle.rebuild(RebuildRequest(chunk_size=300, chunk_overlap=30), listeners=[cancel_at_start])
    assert cancelled.status == "cancelled" and lifecycle.registry.require(cancelled.collection).status == CANCELLED
    assert lifecycle.jobs.get(jobs[0]).status == "cancelled"
    resumed = lifecycle.rebuild(RebuildRequest(chunk_size=300, chunk_overlap=30))
    assert resumed.status == "succeeded" and resumed.collection == cancelled.collection  # continued, not restarted
    assert resumed.mode == "rechunk" and resumed.docs_from_source == resumed.docs_synced > 0
    entry = lifecycle.registry.require(resumed.collection)
    assert entry.status == READY and (entry.chunk_size, entry.chunk_overlap) == (300, 30)
    rows = lifecycle.store(entry).query("", ("id", "text", "owner_id", "group_ids", "visibility", "sensitivity"))
    assert len(rows) > live_rows and max(len(r["text"]) for r in rows) <= 300
    assert {(r["owner_id"], tuple(r["group_ids"]), r["visibility"]) for r in rows} == {("u-owner", ("g-team",),
                                                                                         "group")}
    assert all(r["sensitivity"] for r in rows)  # labelled again by the enricher
    with pytest.raises(Conflict):
        lifecycle.drop(lifecycle.live().name)  # never the live collection
    ingest_job = lifecycle.jobs.create("files", {"path": str(source)})
    with pytest.raises(Conflict, match="ingest jobs are open"):  # they embed with the live model
        lifecycle.switch(entry.name)
    lifecycle.jobs.cancel(ingest_job)


def test_admin_api_rebuild_job_list_and_switch(settings: Settings, live_store: ChunkStore) -> None:
    upsert(live_store, corpus_chunks(8))
    client = TestClient(create_app(compose(settings, store=live_store)))
    admin = {"Authorization": "Bearer admin-token"}
    assert client.post("/admin/index/rebuild", headers={"Authorization": "Bearer alice-token"},
                       json={"embedding": NEW}).status_code == 403
    assert client.post("/admin/index/rebuild", headers=admin, json={"embedding": "nope"}).status_code == 422
    started = client.post("/admin/index/rebuild", headers=admin, json={"embedding": NEW})
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    job = wait_until(lambda: (lambda j: j if j["finished_at"] else None)(
        client.get(f"/jobs/{job_id}", headers=admin).json()), 60, "the rebuild job")
    assert job["status"] == "succeeded" and job["items_done"] == 8 and job["chunks_done"] == 8
    listed = client.get("/admin/index", headers=admin).json()["collections"]
    assert [(c["embedding_model"], c["status"], c["live"], c["rows"]) for c in listed] == [
        (OLD, LIVE, True, 8), (NEW, READY, False, 8)]
    gated = client.post("/admin/index/switch", headers=admin, json={})
    assert gated.status_code == 422 and gated.json()["field"] == "queries"  # no eval set configured
    switched = client.post("/admin/index/switch", headers=admin, json={"force": True})
    assert switched.status_code == 200 and switched.json()["embedding_model"] == NEW
    hit = client.post("/query", headers=admin, json={"query": query_text(WORDS[2]), "mode": "search", "k": 1,
                                                     "search_strategy": "dense"}).json()["sources"][0]
    assert hit["doc_id"] == "d2"
    assert client.delete(f"/admin/index/{switched.json()['live']}", headers=admin).status_code == 409
    with pytest.raises(ConfigError, match=r"fake:hash-bow-v2.*fake:hash-bow \(64-d\)"):
        compose(settings, store=live_store)  # a server still configured for the old model refuses to start
    assert client.post("/admin/index/rollback", headers=admin).json()["live"] == listed[0]["name"]
