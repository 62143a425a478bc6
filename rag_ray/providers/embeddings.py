"""``EmbeddingService``: everything ``POST /embeddings`` and ``POST /v1/embeddings`` do, without HTTP.

    service = build_embedding_service(settings, collection)   # collection: the server's own embedder
    result = await service.embed(EmbedRequest(["머신러닝이란 무엇인가?"], model="text-embedding-3-large",
                                              dimensions=1024))
    result.vectors, result.provider, result.model, result.prompt_tokens, result.cost_usd, result.cached

- The embedders are ``RAG_EMBEDDING_PROVIDERS`` (``[{"id": "provider:model", …}]`` or
  ``{"strategy": …, "providers": [...]}``); unset, only the collection embedder. An entry with the collection
  embedder's ``provider:model`` *is* the collection embedder (in Serve the batched deployment), never a second
  copy of the model.
- Selection: ``provider`` (a provider name or a ``provider:model`` id) and ``model`` (a model name or id) narrow
  the entries (422 naming ``provider`` / ``model`` when nothing matches); ``dimensions`` keeps the entries that
  can shorten to it (``rag_ray.embedding.dimensions``; 422 naming ``dimensions`` when none can); the
  ``strategy`` (``load_balancing``: round_robin, random, least_loaded, latency_based, health_based,
  cost_optimized) orders what is left within priority tiers; retries and fallback come from ``EmbeddingManager``.
  All rows of one call come from one entry, the one the result names.
- ``dimensions``: sent to the provider where its API has the parameter (OpenAI ``text-embedding-3-*``, Gemini),
  else the rows are truncated and renormalised (Matryoshka models only). ``normalize`` (default true)
  L2-normalises the rows.
- A cache of vectors (``RAG_EMBEDDING_CACHE_SIZE``, LRU, per entry, input type, size and text) answers repeats;
  ``cached`` counts the rows it served and ``cost_usd`` only charges the rows a provider computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag_ray.config import Settings
from rag_ray.embedding.backends import AsyncBackend, EmbedBackend
from rag_ray.embedding.base import AsyncEmbedder, truncate_dimensions
from rag_ray.embedding.dimensions import Matryoshka, matryoshka
from rag_ray.errors import InvalidInput
from rag_ray.providers.config import (
    ProviderSpec,
    build_embedding_manager,
    configured_embedding_specs,
    create_embed_backend,
)
from rag_ray.providers.manager import EmbedderEntry, EmbeddingManager
from rag_ray.types import InputType


@dataclass(frozen=True)
class EmbedRequest:
    texts: Sequence[str]
    model: str | None = None  # a model name or a provider:model id
    provider: str | None = None  # a provider name or a provider:model id
    dimensions: int | None = None
    normalize: bool = True
    strategy: str | None = None  # a load-balancing strategy name (the manager's default when None)
    input_type: InputType = "document"


@dataclass
class EmbedResult:
    vectors: np.ndarray
    provider: str
    model: str
    prompt_tokens: int  # estimated (~4 characters a token): embedders do not report usage
    cost_usd: float
    cached: int = 0  # rows answered from the cache

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def id(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class EmbeddingModel:
    """One configured embedder, as ``/v1/models`` lists it."""

    id: str
    provider: str
    model: str
    collection: bool  # the collection's own embedder (its vectors are comparable with the stored chunks)
    max_dimensions: int | None  # the largest ``dimensions`` it accepts; None: it cannot shorten its vectors


class EmbeddingService:
    def __init__(self, manager: EmbeddingManager, *, collection_id: str | None = None):
        self.manager = manager
        self.collection_id = collection_id

    # ---- selection ----
    def candidates(self, request: EmbedRequest) -> list[EmbedderEntry]:
        """The entries that may serve ``request``; InvalidInput naming the field that rules them all out."""
        entries = self.manager.entries
        if request.provider is not None:
            entries = [e for e in entries if _is_provider(request.provider, e)]
            _require(entries, "provider", f"unknown embedding provider {request.provider!r}", self.manager)
        if request.model is not None:
            entries = [e for e in entries if request.model in (e.model, e.id)]
            _require(entries, "model", f"unknown embedding model {request.model!r}", self.manager)
        if request.dimensions is not None:
            entries = _shortenable(entries, request.dimensions)
        return entries

    # ---- the call ----
    async def embed(self, request: EmbedRequest) -> EmbedResult:
        if not request.texts:
            raise InvalidInput("input must hold at least one text", field="input")
        entries = self.candidates(request)
        embedded = await self.manager.embed_on(request.texts, entries=entries, input_type=request.input_type,
                                               strategy=request.strategy, dimensions=request.dimensions)
        entry = embedded.entry
        if request.dimensions is not None and embedded.vectors.shape[1] < request.dimensions:
            raise InvalidInput(f"{entry.id} returned {embedded.vectors.shape[1]}-d vectors, fewer than "
                               f"dimensions={request.dimensions}", field="dimensions")
        vectors = truncate_dimensions(embedded.vectors, request.dimensions, request.normalize)
        return EmbedResult(vectors, entry.provider, entry.model, embedded.prompt_tokens, embedded.cost_usd,
                           embedded.cached)

    # ---- introspection ----
    def models(self) -> list[EmbeddingModel]:
        return [EmbeddingModel(e.id, e.provider, e.model, e.id == self.collection_id, _max_dimensions(e))
                for e in self.manager.entries]

    def status(self) -> dict[str, object]:
        """Entries (calls, failures, breaker, tokens, cost), strategy and cache statistics."""
        return self.manager.status()


def _is_provider(name: str, entry: EmbedderEntry) -> bool:
    return name.lower() == entry.provider or name == entry.id


def _require(entries: list[EmbedderEntry], field: str, message: str, manager: EmbeddingManager) -> None:
    if not entries:
        configured = ", ".join(e.id for e in manager.entries)
        raise InvalidInput(f"{message} (configured: {configured})", field=field)


def _max_dimensions(entry: EmbedderEntry) -> int | None:
    shape: Matryoshka | None = matryoshka(entry.model)
    return shape.native if shape else None


def _shortenable(entries: list[EmbedderEntry], dimensions: int) -> list[EmbedderEntry]:
    fits = [e for e in entries if (_max_dimensions(e) or 0) >= dimensions]
    if fits:
        return fits
    described = ", ".join(f"{e.id} (up to {m})" if (m := _max_dimensions(e)) else f"{e.id} (not trained for it)"
                          for e in entries)
    raise InvalidInput(f"dimensions={dimensions} needs a model trained for shortened vectors (Matryoshka) at least "
                       f"that large; candidates: {described}", field="dimensions")


# ------------------------------------------------------------------------------------------------------ building
def serves_collection(spec: ProviderSpec, collection: AsyncEmbedder) -> bool:
    """Whether ``spec`` names the collection embedder's model (then the entry reuses it)."""
    return (spec.provider, spec.model.lower()) == (collection.provider.lower(), collection.model.lower())


def build_embedding_service(settings: Settings, collection: AsyncEmbedder) -> EmbeddingService:
    """The service over ``RAG_EMBEDDING_PROVIDERS`` (else the collection embedder alone). Entries with the
    collection's ``provider:model`` use ``collection`` itself; the others are built from the registries."""
    own = ProviderSpec(id=f"{collection.provider}:{collection.model}")
    specs, strategy = configured_embedding_specs(settings, default=own)

    def create(spec: ProviderSpec) -> EmbedBackend:
        return AsyncBackend(collection) if serves_collection(spec, collection) else create_embed_backend(spec)

    manager = build_embedding_manager(settings, specs, strategy=strategy, create=create)
    collection_id = next((s.id for s in specs if serves_collection(s, collection)), None)
    return EmbeddingService(manager, collection_id=collection_id)


__all__ = ["EmbedRequest", "EmbedResult", "EmbeddingModel", "EmbeddingService", "build_embedding_service",
           "serves_collection"]
