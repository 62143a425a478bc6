"""The search layer on real Milvus Lite: access filter on every leg, capability errors, reranking."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from rag_ray.config import Settings
from rag_ray.embedding.backends import ThreadedBackend
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import InvalidInput
from rag_ray.ingest.stages import chunk_document
from rag_ray.retrieval.fusion import FusionConfig
from rag_ray.retrieval.rerank import FeatureReranker
from rag_ray.retrieval.search import SearchOptions, options_from_settings, reranker_from_settings
from rag_ray.retrieval.service import RetrievalService
from rag_ray.store.milvus import GRPC_OPTIONS, ChunkStore
from rag_ray.text.chunking import Chunker
from rag_ray.types import Acl, ParsedDocument, Principal

ALICE = Principal("u-alice", "alice", "user", ("g-lab",))
BOB = Principal("u-bob", "bob", "user")
SECRET = "zebra launch codes for project nightingale are stored in the vault"
DOCS = [
    ("mem://alice-private", SECRET, Acl("u-alice", (), "private")),
    ("mem://lab-group", "nightingale lab notes: zebra tracking collars and launch schedule", Acl("u-alice",
                                                                                                ("g-lab",), "group")),
    ("mem://public-zebra", "zebra herds migrate across the savanna every year", Acl("system", (), "public")),
    ("mem://public-launch", "the rocket launch was postponed because of weather", Acl("system", (), "public")),
    ("mem://bob-private", "bob's grocery list: bread, milk, zebra cakes", Acl("u-bob", (), "private")),
    ("mem://public-ko", "국민건강보험공단은 건강검진 대상자에게 검진표를 보냅니다", Acl("system", (), "public")),
]


def ingest(store: ChunkStore, embedder: FakeEmbedder, docs: list[tuple[str, str, Acl]]) -> None:
    chunker = Chunker(800, 100)
    chunks = [c for uri, text, acl in docs for c in chunk_document(ParsedDocument(uri, text), chunker, acl)]
    store.upsert(chunks, embedder.embed([c.text for c in chunks]))


@pytest.fixture
def service(fake_store: ChunkStore, fake_embedder: FakeEmbedder) -> RetrievalService:
    ingest(fake_store, fake_embedder, DOCS)
    return RetrievalService(fake_store, ThreadedBackend(fake_embedder), reranker=FeatureReranker())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("strategy", ["dense", "sparse", "hybrid"])
@pytest.mark.parametrize("rerank", [False, True])
def test_private_doc_of_another_user_never_appears(service: RetrievalService, strategy: str, rerank: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    exprs: list[str] = []
    real_search = service.store.search

    def spy(**kwargs: Any) -> Any:
        exprs.append(kwargs["expr"])
        return real_search(**kwargs)

    monkeypatch.setattr(service.store, "search", spy)
    hits = run(service.search(BOB, SECRET, k=10, strategy=strategy, rerank=rerank))  # type: ignore[arg-type]
    uris = {h.source_uri for h in hits}
    assert "mem://alice-private" not in uris and "mem://lab-group" not in uris
    assert "mem://bob-private" in uris or strategy == "sparse"
    assert exprs and all('owner_id == "u-bob"' in e for e in exprs)  # every leg, every re-score
    assert len(exprs) == {"dense": 1, "sparse": 1, "hybrid": 4 if rerank else 2}[strategy]


@pytest.mark.parametrize(("k", "per_leg"), [(5, SearchOptions().candidates), (60, 60)])
def test_each_hybrid_leg_fetches_the_candidates_and_at_least_k(fake_store: ChunkStore, fake_embedder: FakeEmbedder,
                                                                monkeypatch: pytest.MonkeyPatch, k: int,
                                                                per_leg: int) -> None:
    """The default a server starts with (the setting) is the measured one, and a large k widens every leg."""
    assert Settings.model_fields["hybrid_candidates"].default == SearchOptions().candidates == 40
    ingest(fake_store, fake_embedder, DOCS)
    limits: dict[str, int] = {}
    real_search = fake_store.search

    def spy(**kwargs: Any) -> Any:
        limits[kwargs["strategy"]] = kwargs["k"]
        return real_search(**kwargs)

    monkeypatch.setattr(fake_store, "search", spy)
    service = RetrievalService(fake_store, ThreadedBackend(fake_embedder),
                               options=options_from_settings(Settings(app_env="test")))
    hits = run(service.search(BOB, "zebra launch", k=k, strategy="hybrid"))
    assert limits == {"dense": per_leg, "sparse": per_leg}
    assert hits and len(hits) <= k


@pytest.mark.parametrize("strategy", ["dense", "sparse", "hybrid"])
def test_group_member_and_owner_see_what_the_acl_allows(service: RetrievalService, strategy: str) -> None:
    uris = {h.source_uri for h in run(service.search(ALICE, SECRET, k=10, strategy=strategy))}  # type: ignore[arg-type]
    assert "mem://alice-private" in uris
    assert "mem://bob-private" not in uris


def test_user_filters_are_anded_on_every_leg(service: RetrievalService) -> None:
    hits = run(service.search(ALICE, "zebra launch", k=10, strategy="hybrid",
                              filters={"visibility": "public"}))
    assert hits and {h.metadata["visibility"] for h in hits} == {"public"}


def test_korean_query_finds_the_korean_passage_by_morphemes(service: RetrievalService) -> None:
    # "건강검진을" (with a particle) only matches "건강검진" after morpheme analysis of both sides.
    hits = run(service.search(BOB, "건강검진을 받으려면", k=3, strategy="sparse"))
    assert hits and hits[0].source_uri == "mem://public-ko"


def test_stopword_only_query_returns_no_sparse_hits(service: RetrievalService) -> None:
    assert run(service.search(BOB, "the and of", k=3, strategy="sparse")) == []


def test_server_without_bm25_names_search_strategy(milvus_uri: str, collection_name: str) -> None:
    from pymilvus import MilvusClient

    store = ChunkStore(MilvusClient(uri=milvus_uri, grpc_options=GRPC_OPTIONS), collection_name, 64, enable_bm25=False)
    store.ensure_collection()
    try:
        embedder = FakeEmbedder()
        ingest(store, embedder, DOCS[2:4])
        service = RetrievalService(store, ThreadedBackend(embedder))
        for strategy in ("sparse", "hybrid"):
            with pytest.raises(InvalidInput) as err:
                run(service.search(BOB, "zebra", strategy=strategy))  # type: ignore[arg-type]
            assert err.value.field == "search_strategy"
            assert strategy in err.value.message and "BM25" in err.value.message
        assert run(service.search(BOB, "zebra herds", strategy="dense"))[0].source_uri == "mem://public-zebra"
    finally:
        store.drop()


def test_rerank_without_a_reranker_searches_unreranked(fake_store: ChunkStore, fake_embedder: FakeEmbedder) -> None:
    """The seed's `enable_reranking: true` must work on a server with no reranker configured."""
    service = RetrievalService(fake_store, ThreadedBackend(fake_embedder), reranker=None)
    plain = run(service.search(BOB, "zebra", strategy="hybrid"))
    assert run(service.search(BOB, "zebra", strategy="hybrid", rerank=True)) == plain


# A small judged fixture: each query has one relevant passage.
FIXTURE_DOCS = [
    ("mem://f1", "vitamin c deficiency causes scurvy, with bleeding gums and fatigue"),
    ("mem://f2", "scurvy was common among sailors on long voyages without fresh fruit"),
    ("mem://f3", "citrus fruit such as lemons and limes are rich in ascorbic acid"),
    ("mem://f4", "iron deficiency anaemia causes fatigue and pale skin"),
    ("mem://f5", "bleeding gums can also come from gum disease and poor dental hygiene"),
    ("mem://f6", "the british navy issued lime juice to prevent scurvy"),
    ("mem://f7", "보험료를 납부하지 않으면 보험 계약이 해지될 수 있습니다"),
    ("mem://f8", "건강보험 가입자는 매년 건강검진을 받을 수 있습니다"),
]
FIXTURE_QUERIES = {
    "what does a lack of vitamin c cause": "mem://f1",
    "why did the navy give sailors lime juice": "mem://f6",
    "which fruits contain ascorbic acid": "mem://f3",
    "what causes pale skin and tiredness": "mem://f4",
    "보험료 미납 시 계약 해지": "mem://f7",
    "건강검진 대상": "mem://f8",
}


def _ndcg10(uris: list[str], relevant: str) -> float:
    return next((1 / math.log2(i + 2) for i, u in enumerate(uris[:10]) if u == relevant), 0.0)


@pytest.mark.parametrize("fusion", [FusionConfig(), FusionConfig(method="rrf", dense_weight=0.5)])
def test_default_reranker_never_lowers_ndcg_on_the_fixture(fake_store: ChunkStore, fake_embedder: FakeEmbedder,
                                                          fusion: FusionConfig) -> None:
    ingest(fake_store, fake_embedder, [(u, t, Acl("system", (), "public")) for u, t in FIXTURE_DOCS])
    reranker = reranker_from_settings(Settings())
    service = RetrievalService(fake_store, ThreadedBackend(fake_embedder), fusion=fusion, reranker=reranker)
    plain, reranked = [], []  # mean nDCG@10 over the queries, as the benchmarks measure it
    for query, relevant in FIXTURE_QUERIES.items():
        hits = run(service.search(BOB, query, k=8, strategy="hybrid", rerank=False))
        plain.append(_ndcg10([h.source_uri for h in hits], relevant))
        hits = run(service.search(BOB, query, k=8, strategy="hybrid"))
        reranked.append(_ndcg10([h.source_uri for h in hits], relevant))
    assert sum(reranked) >= sum(plain)


def test_feature_reranker_rescoring_keeps_the_candidate_set(fake_store: ChunkStore,
                                                            fake_embedder: FakeEmbedder) -> None:
    ingest(fake_store, fake_embedder, [(u, t, Acl("system", (), "public")) for u, t in FIXTURE_DOCS])
    service = RetrievalService(fake_store, ThreadedBackend(fake_embedder), reranker=FeatureReranker())
    plain = run(service.search(BOB, "scurvy sailors lime juice", k=8, strategy="hybrid", rerank=False))
    reranked = run(service.search(BOB, "scurvy sailors lime juice", k=8, strategy="hybrid", rerank=True))
    assert {h.chunk_id for h in reranked} == {h.chunk_id for h in plain}
    assert all(0.0 <= h.score <= 1.0 for h in reranked)
    assert reranked[0].source_uri in {"mem://f2", "mem://f6"}


class _VersionedClient:
    """Only what ``ChunkStore.__init__`` asks of a client: its server version, counting the round trips."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.calls = 0

    def get_server_version(self) -> str:
        self.calls += 1
        return self.version


@pytest.mark.parametrize(("version", "bm25", "keyed"), [
    ("milvus_lite-3.0.1", True, True),  # Lite 3.x: no number, both capabilities
    ("v2.3.5-lite", False, False),  # the `milvus` 2.3.5 package: prefix-only like, no BM25
    ("v2.4.15", False, True),
    ("v2.5.4", True, True),
    ("", False, False),  # unknown: the safe, older path
])
def test_capabilities_follow_the_server_release_in_one_round_trip(version: str, bm25: bool, keyed: bool) -> None:
    client = _VersionedClient(version)
    store = ChunkStore(client, "c", 8)
    assert (store.supports_bm25, store.keyed_groups, client.calls) == (bm25, keyed, 1)
    assert ChunkStore(client, "c", 8, enable_bm25=not bm25, keyed_groups=not keyed).keyed_groups is not keyed
    assert client.calls == 1  # both given: the server is not asked
