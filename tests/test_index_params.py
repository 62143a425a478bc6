"""The dense index as settings (``RAG_MILVUS_INDEX_TYPE`` and its parameters): validated with errors naming the
setting, built into the collection and used by searches on the Milvus standalone server (integration: one server per
module, started as tests/test_store_milvus_server.py does), and refused by Milvus Lite where it would be ignored."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from pydantic import ValidationError
from pymilvus import MilvusClient

from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import ConfigError, StoreError
from rag_ray.runtime import open_store
from rag_ray.store.milvus import ChunkStore, VectorIndex
from rag_ray.types import Acl, Chunk
from tests.test_store_milvus_server import _connect, milvus_server  # noqa: F401  (the server fixture)

EMB = FakeEmbedder()
TEXTS = ["green tea leaves", "volcanic ash cloud", "black tea brewing", "granite and basalt", "oolong tea"]
CHUNKS = [Chunk(f"c{i}", f"d{i}", f"/docs/{i}.txt", 0, t, f"h{i}", {}, Acl("system", (), "public"))
          for i, t in enumerate(TEXTS)]
TUNED = {"FLAT": VectorIndex("FLAT"),
         "IVF_FLAT": VectorIndex("IVF_FLAT", nlist=8, nprobe=4),
         "HNSW": VectorIndex("HNSW", m=8, ef_construction=64, ef=16)}


# ------------------------------------------------------------------------------------------------ settings
def test_settings_reach_the_store_index(make_settings: Callable[..., Settings]):
    settings = make_settings(milvus_index_type="HNSW", milvus_hnsw_m=32, milvus_hnsw_ef_construction=300,
                             milvus_hnsw_ef=128)
    assert settings.vector_index() == VectorIndex("HNSW", m=32, ef_construction=300, ef=128)
    assert Settings().vector_index().index_type == "AUTOINDEX"  # the default


@pytest.mark.parametrize(("env", "name"), [
    ({"RAG_MILVUS_INDEX_TYPE": "DISKANN"}, "RAG_MILVUS_INDEX_TYPE"),
    ({"RAG_MILVUS_IVF_NLIST": "0"}, "RAG_MILVUS_IVF_NLIST"),
    ({"RAG_MILVUS_HNSW_M": "1"}, "RAG_MILVUS_HNSW_M"),
    ({"RAG_MILVUS_HNSW_EF": "20000"}, "RAG_MILVUS_HNSW_EF"),
])
def test_bad_values_name_the_setting(monkeypatch, env, name):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_nprobe_above_nlist_is_a_config_error_naming_nprobe(monkeypatch):
    monkeypatch.setenv("RAG_MILVUS_INDEX_TYPE", "IVF_FLAT")
    monkeypatch.setenv("RAG_MILVUS_IVF_NLIST", "16")
    monkeypatch.setenv("RAG_MILVUS_IVF_NPROBE", "32")
    with pytest.raises(ConfigError) as err:
        Settings()
    assert err.value.field == "RAG_MILVUS_IVF_NPROBE"


# ------------------------------------------------------------------------------------------------ Milvus Lite
@pytest.mark.parametrize("index_type", ["IVF_FLAT", "HNSW"])
def test_milvus_lite_refuses_indexes_whose_parameters_it_would_ignore(make_settings, index_type):
    settings = make_settings(milvus_index_type=index_type)
    with pytest.raises(ConfigError, match="Milvus Lite") as err:
        open_store(settings, EMB.dimension)
    assert err.value.field == "RAG_MILVUS_INDEX_TYPE"


def test_milvus_lite_builds_flat_and_a_different_type_on_reopen_is_refused(make_settings):
    flat = make_settings(milvus_index_type="FLAT")
    store = open_store(flat, EMB.dimension)
    try:
        assert store.vector_index_info()["index_type"] == "FLAT"
        fill_and_search(store)
        open_store(flat.model_copy(update={"milvus_index_type": "AUTOINDEX"}), EMB.dimension)  # takes what exists
    finally:
        store.drop()
    auto = make_settings(collection=f"auto_{uuid.uuid4().hex[:8]}")
    store = open_store(auto, EMB.dimension)  # created with AUTOINDEX
    try:
        with pytest.raises(ConfigError, match="rebuild") as err:
            open_store(auto.model_copy(update={"milvus_index_type": "FLAT"}), EMB.dimension)
        assert err.value.field == "RAG_MILVUS_INDEX_TYPE"
    finally:
        store.drop()


# ------------------------------------------------------------------------------------------------ a server
@pytest.fixture
def server_store(milvus_server) -> Iterator[Callable[[VectorIndex], ChunkStore]]:  # noqa: F811
    opened: list[ChunkStore] = []

    def open_with(index: VectorIndex) -> ChunkStore:
        base = _connect(milvus_server)  # waits until the server's coordinators answer
        store = ChunkStore.connect(milvus_server, f"idx_{uuid.uuid4().hex[:8]}", EMB.dimension, index=index)
        base.drop()
        opened.append(store)
        return store

    yield open_with
    for store in opened:
        store.drop()


@pytest.mark.integration
@pytest.mark.parametrize("index_type", list(TUNED))
def test_each_index_type_and_its_parameters_reach_the_server_collection(server_store, index_type):
    index = TUNED[index_type]
    store = server_store(index)
    info = store.vector_index_info()
    assert info["index_type"] == index_type and info["metric_type"] == "IP"
    for key, value in index.build_params().items():
        assert str(info[key]) == str(value), info
    fill_and_search(store)  # searches carry nprobe / ef (ef raised to k when k is larger)


def fill_and_search(store: ChunkStore) -> None:
    store.upsert(CHUNKS, EMB.embed(TEXTS))
    store.flush()
    query = EMB.embed(["tea"], input_type="query")[0]
    hits = store.search(vector=query, k=3)
    assert len(hits) == 3 and hits[0].chunk_id in {"c0", "c2", "c4"}
    assert len(store.search(vector=query, k=5)) == 5


# ------------------------------------------------------------------------------------------------ index builds
class _IndexingClient:
    """Only what creating a collection asks of a client, with scripted index states per field."""

    prepare_index_params = staticmethod(MilvusClient.prepare_index_params)

    def __init__(self, states: dict[str, list[str]]) -> None:
        self.states = states
        self.create_index_kwargs: dict[str, object] = {}
        self.loaded = False

    def has_collection(self, name: str) -> bool:
        return False

    def create_collection(self, name: str, **kwargs: object) -> None:
        pass

    def create_index(self, name: str, params: object, **kwargs: object) -> None:
        self.create_index_kwargs = kwargs

    def describe_index(self, name: str, field: str) -> dict[str, str]:
        states = self.states[field]
        return {"state": states.pop(0) if len(states) > 1 else states[0]}

    def load_collection(self, name: str) -> None:
        self.loaded = True


def _store(client: _IndexingClient) -> ChunkStore:
    return ChunkStore(client, "c", 8, enable_bm25=True, keyed_groups=True)


def test_a_new_collection_loads_once_milvus_reports_its_indexes_built():
    client = _IndexingClient({"vector": ["InProgress", "InProgress", "Finished"], "sparse": ["Finished"]})
    _store(client).ensure_collection()
    assert client.create_index_kwargs == {"sync": False}  # pymilvus's own wait sleeps 0.5 s before looking
    assert client.states["vector"] == ["Finished"] and client.loaded


def test_a_failed_index_build_is_a_store_error_naming_the_field():
    client = _IndexingClient({"vector": ["Finished"], "sparse": ["InProgress", "Failed"]})
    with pytest.raises(StoreError, match=r"c\.sparse"):
        _store(client).ensure_collection()
    assert not client.loaded


def test_an_index_never_built_times_out_with_its_state(monkeypatch):
    monkeypatch.setattr("rag_ray.store.milvus.INDEX_BUILD_TIMEOUT_S", 0.0)
    client = _IndexingClient({"vector": ["InProgress"], "sparse": ["Finished"]})
    with pytest.raises(StoreError, match=r"c\.vector was not built .*InProgress"):
        _store(client).ensure_collection()


def test_milvus_lite_reports_a_new_collections_indexes_built(fake_store: ChunkStore):
    for field in ("vector", "sparse"):
        assert fake_store.client.describe_index(fake_store.collection, field)["state"] == "Finished"
