"""EmbeddingService (library): selection, strategies, dimensions, cache and fallback through the real SDKs
against the fake OpenAI/Ollama servers; the collection embedder reused; the collection compatibility check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from rag_ray.config import Settings
from rag_ray.embedding.backends import ThreadedBackend
from rag_ray.embedding.base import l2_normalize
from rag_ray.embedding.dimensions import matryoshka, model_family
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.errors import ConfigError, InvalidInput, Overloaded, ProviderUnavailable
from rag_ray.providers.embeddings import EmbeddingService, EmbedRequest, EmbedResult, build_embedding_service
from rag_ray.store.milvus import ChunkStore, check_collection_compatible
from rag_ray.testing.fake_servers import FakeOllamaServer, FakeOpenAIServer, fake_vector

TEXTS = ["머신러닝이란 무엇인가?", "딥러닝과 머신러닝의 차이점"]
LOCAL = "local:all-MiniLM-L6-v2"


def local_collection() -> FakeEmbedder:
    """Stands in for the server's collection embedder (all-MiniLM-L6-v2, 384-d) without loading the model."""
    return FakeEmbedder("all-MiniLM-L6-v2", 384, provider="local")


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeOllamaServer]]:
    with FakeOpenAIServer(dimensions=3072) as oai, FakeOllamaServer(dimensions=768) as ollama:
        yield oai, ollama  # type: ignore[misc]


def three_providers(oai: FakeOpenAIServer, ollama: FakeOllamaServer, **extra: Any) -> str:
    """A local, an OpenAI-protocol and an Ollama embedder, as RAG_EMBEDDING_PROVIDERS."""
    return json.dumps([{"id": LOCAL},
                       {"id": "openai:text-embedding-3-large", "api_key": "sk-test", "base_url": oai.base_url},
                       {"id": "ollama:nomic-embed-text", "base_url": ollama.url, **extra}])


def seed_settings(oai: FakeOpenAIServer, ollama: FakeOllamaServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"embedding_provider": "local", "embedding_model": "all-MiniLM-L6-v2",
                              "embedding_providers_json": three_providers(oai, ollama), "llm_max_retries": 0}
    return Settings(**{**values, **overrides})


def service_for(settings: Settings, collection: FakeEmbedder) -> EmbeddingService:
    return build_embedding_service(settings, ThreadedBackend(collection))


def embed(service: EmbeddingService, **request: Any) -> EmbedResult:
    return asyncio.run(service.embed(EmbedRequest(request.pop("texts", TEXTS), **request)))


def expected_truncated(texts: list[str], native: int, dimensions: int) -> np.ndarray:
    return l2_normalize(np.asarray([fake_vector(t, native)[:dimensions] for t in texts], dtype=np.float32))


# ---------------------------------------------------------------------------------------------- the seed's
def test_the_seeds_three_requests(servers):
    oai, ollama = servers
    collection = local_collection()
    service = service_for(seed_settings(oai, ollama), collection)

    first = embed(service, model="text-embedding-3-large", dimensions=1024, normalize=True)
    assert (first.provider, first.model, first.dimensions) == ("openai", "text-embedding-3-large", 1024)
    assert oai.last("/embeddings").body["dimensions"] == 1024  # the API parameter, not truncation
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    assert first.cost_usd > 0  # 0.13 USD per 1M tokens

    second = embed(service, texts=["자연어 처리 기술 설명"], provider="ollama", model="nomic-embed-text",
                   normalize=True)
    assert (second.provider, second.model, second.dimensions) == ("ollama", "nomic-embed-text", 768)
    assert second.cost_usd == 0.0

    third = embed(service, texts=["자연어 처리 기술의 발전"], strategy="cost_optimized", dimensions=512, normalize=True)
    # the cheapest entry that can shorten to 512: Ollama's nomic-embed-text (free, Matryoshka, 768-d); the local
    # MiniLM is free too but cannot shorten its vectors, OpenAI costs money
    assert (third.provider, third.model, third.dimensions) == ("ollama", "nomic-embed-text", 512)
    np.testing.assert_allclose(third.vectors, expected_truncated(["자연어 처리 기술의 발전"], 768, 512), atol=1e-6)
    assert oai.count("/embeddings") == 1 and collection.calls == 0


def test_an_entry_with_the_collection_model_is_the_collection_embedder(servers):
    collection = local_collection()
    service = service_for(seed_settings(*servers), collection)
    result = embed(service, provider="local")
    assert (result.provider, result.model, result.dimensions) == ("local", "all-MiniLM-L6-v2", 384)
    assert collection.calls == 1  # the collection's embedder served it: no second copy of the model was loaded
    np.testing.assert_allclose(result.vectors, local_collection().embed(TEXTS), atol=1e-6)
    assert [(m.id, m.collection, m.max_dimensions) for m in service.models()] == [
        (LOCAL, True, None), ("openai:text-embedding-3-large", False, 3072), ("ollama:nomic-embed-text", False, 768)]


def test_without_a_provider_list_the_collection_embedder_serves_alone():
    collection = FakeEmbedder()
    service = service_for(Settings(embedding_provider="fake", embedding_model="hash-bow"), collection)
    result = embed(service)
    assert (result.provider, result.model, result.dimensions, collection.calls) == ("fake", "hash-bow", 64, 1)
    assert [m.id for m in service.models()] == ["fake:hash-bow"]
    assert embed(service, model="fake:hash-bow").cached == 2


# ------------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize(("request_fields", "field"), [
    ({"provider": "google"}, "provider"),
    ({"model": "text-embedding-3-small"}, "model"),
    ({"provider": "ollama", "model": "text-embedding-3-large"}, "model"),
    ({"model": "all-MiniLM-L6-v2", "dimensions": 128}, "dimensions"),  # not trained for shortened vectors
    ({"provider": "ollama", "dimensions": 1024}, "dimensions"),  # larger than nomic-embed-text's 768
    ({"dimensions": 4096}, "dimensions"),
])
def test_unknown_targets_and_impossible_dimensions_name_the_field(servers, request_fields, field):
    service = service_for(seed_settings(*servers), local_collection())
    with pytest.raises(InvalidInput) as info:
        embed(service, **request_fields)
    assert info.value.field == field
    assert servers[0].count() == servers[1].count() == 0  # refused before any provider call


def test_dimensions_refusal_explains_which_models_can():
    service = service_for(Settings(embedding_provider="fake", embedding_model="hash-bow"), FakeEmbedder())
    with pytest.raises(InvalidInput, match=r"fake:hash-bow \(not trained for it\)"):
        embed(service, dimensions=32)


# -------------------------------------------------------------------------------------- cache and fallback
def test_repeats_come_from_the_cache(servers):
    oai, ollama = servers
    service = service_for(seed_settings(oai, ollama), local_collection())
    first = embed(service, model="nomic-embed-text")
    again = embed(service, texts=[TEXTS[1], "new text"], model="nomic-embed-text")
    assert (first.cached, again.cached, ollama.count("/api/embed")) == (0, 1, 2)
    assert ollama.last("/api/embed").body["input"] == ["new text"]  # only the miss went to the server
    np.testing.assert_allclose(again.vectors[0], first.vectors[1], atol=1e-6)
    # the size asked of the provider is part of the key: 256-d OpenAI rows are not served as 1024-d ones
    embed(service, model="text-embedding-3-large", dimensions=1024)
    assert embed(service, model="text-embedding-3-large", dimensions=1024).cached == 2
    assert embed(service, model="text-embedding-3-large", dimensions=256).cached == 0
    assert oai.count("/embeddings") == 2 and service.status()["cache"]["hits"] >= 3  # type: ignore[index]


def test_cache_size_zero_turns_it_off(servers):
    oai, ollama = servers
    service = service_for(seed_settings(oai, ollama, embedding_cache_size=0), local_collection())
    embed(service, model="nomic-embed-text")
    assert embed(service, model="nomic-embed-text").cached == 0 and ollama.count("/api/embed") == 2


def test_a_failing_provider_falls_back_to_the_next_candidate(servers):
    oai, ollama = servers
    service = service_for(seed_settings(oai, ollama), local_collection())
    ollama.fail(1, 503)
    result = embed(service, texts=["자연어 처리 기술의 발전"], strategy="cost_optimized", dimensions=512)
    assert (result.provider, result.dimensions) == ("openai", 512)
    assert oai.last("/embeddings").body["dimensions"] == 512 and ollama.count("/api/embed") == 1


class FullDeployment:
    """The collection embedder's Serve deployment with full queues (HandleEmbedder raises Overloaded)."""

    provider, model, dimension = "fake", "hash-bow", 64

    async def embed(self, texts: Sequence[str], *, input_type: str = "document") -> np.ndarray:
        raise Overloaded("the embedder is at capacity; retry shortly", retry_after=2.0)


def test_a_full_collection_deployment_is_unavailable_with_its_retry_after():
    settings = Settings(embedding_provider="fake", embedding_model="hash-bow", llm_max_retries=3)
    service = build_embedding_service(settings, FullDeployment())
    with pytest.raises(ProviderUnavailable) as info:
        embed(service)
    assert info.value.retry_after == 2.0
    assert service.status()["entries"][0]["calls"] == 1  # type: ignore[index]  # not retried into a full queue


def test_round_robin_over_one_candidate_stays_on_it(servers):
    service = service_for(seed_settings(*servers), local_collection())
    served = {embed(service, texts=[f"text {i}"], model="nomic-embed-text").provider for i in range(3)}
    assert served == {"ollama"}


# ------------------------------------------------------------------------------------- the Matryoshka table
@pytest.mark.parametrize(("model", "family", "native"), [
    ("nomic-embed-text:latest", "nomic-embed-text", 768),
    ("nomic-ai/nomic-embed-text-v1.5", "nomic-embed-text-v1.5", 768),
    ("TEXT-EMBEDDING-3-SMALL", "text-embedding-3-small", 1536),
    ("all-MiniLM-L6-v2", "all-minilm-l6-v2", None),
])
def test_matryoshka_table_matches_by_family(model, family, native):
    shape = matryoshka(model)
    assert model_family(model) == family and (shape.native if shape else None) == native


# --------------------------------------------------------------------------------- collection compatibility
@pytest.fixture
def collection_store(milvus_uri: str, collection_name: str) -> Iterator[Callable[..., ChunkStore]]:
    made: list[ChunkStore] = []

    def make(dimension: int = 64, model: str | None = "fake:hash-bow") -> ChunkStore:
        made.append(ChunkStore.connect(milvus_uri, collection_name, dimension, embedding_model=model))
        return made[-1]

    yield make
    if made:
        made[0].drop()


def test_collection_records_its_model_and_refuses_another(collection_store):
    store = collection_store()
    check_collection_compatible(store, "fake:hash-bow", 64)
    with pytest.raises(ConfigError) as info:
        check_collection_compatible(store, "fake:other-model", 64)
    message = str(info.value)
    assert "fake:hash-bow" in message and "fake:other-model" in message and info.value.field == "EMBEDDING_MODEL"
    with pytest.raises(ConfigError, match=r"holds 64-d vectors from fake:hash-bow.*local:all-MiniLM-L6-v2 \(384-d\)"):
        check_collection_compatible(store, LOCAL, 384)


def test_opening_a_collection_with_another_embedder_is_a_config_error(collection_store):
    collection_store()
    with pytest.raises(ConfigError, match=r"64-d vectors from fake:hash-bow.*local:all-MiniLM-L6-v2 \(384-d\)"):
        collection_store(384, LOCAL)
    with pytest.raises(ConfigError, match="fake:other"):
        collection_store(64, "fake:other")


def test_a_collection_without_a_recorded_model_adopts_the_configured_one(collection_store):
    store = collection_store(model=None)
    check_collection_compatible(store, "fake:hash-bow", 64)
    stored = store.stored_embedding()
    assert stored is not None and stored.model == "fake:hash-bow"
    with pytest.raises(ConfigError):
        check_collection_compatible(store, "fake:other", 64)


def test_a_missing_collection_passes(milvus_uri: str, collection_name: str):
    from pymilvus import MilvusClient

    from rag_ray.store.milvus import GRPC_OPTIONS

    store = ChunkStore(MilvusClient(uri=milvus_uri, grpc_options=GRPC_OPTIONS), collection_name, 64,
                       enable_bm25=False)
    check_collection_compatible(store, "fake:hash-bow", 64)
    assert store.stored_embedding() is None
