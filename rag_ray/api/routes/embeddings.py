"""``POST /embeddings``: vectors for texts, from the embedding manager when one is configured
(``services.features["embedding_manager"]``: strategies, retries, fallback, cache) else the server's batched
default embedder.

Body (the seed's): ``{input: [...] | "text", model?, provider?, dimensions?, normalize?, load_balancing?,
input_type?}``. ``dimensions`` below the model's size truncates and renormalises (Matryoshka style);
``normalize`` (default true) L2-normalises the rows.

Caps (422 naming the field): ``input`` 1..512 items, each 1..32,000 characters; ``dimensions`` 1..8192 and at
most the model's size; ``model`` ≤ 128 and ``provider`` ≤ 64 characters; unknown fields are refused. An
unknown provider or model is a 422 naming ``provider`` / ``model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_ray.api.deps import current_principal, get_services
from rag_ray.api.routes.chat import check_strategy
from rag_ray.api.services import Services
from rag_ray.embedding.base import truncate_dimensions
from rag_ray.errors import InvalidInput
from rag_ray.llm.base import Usage
from rag_ray.providers.manager import EmbedderEntry, EmbeddingManager, estimate_tokens
from rag_ray.providers.pricing import price_for
from rag_ray.types import InputType

router = APIRouter(tags=["embeddings"], dependencies=[Depends(current_principal)])

MAX_INPUTS = 512
MAX_INPUT_CHARS = 32_000
MAX_DIMENSIONS = 8192

Text = Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]


def as_list(value: Any) -> Any:
    """A single string is a one-item batch."""
    return [value] if isinstance(value, str) else value


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"input": ["머신러닝이란 무엇인가?", "딥러닝과 머신러닝의 차이점"], "model": "text-embedding-3-large",
         "dimensions": 1024, "normalize": True}]})

    input: list[Text] = Field(min_length=1, max_length=MAX_INPUTS)
    model: str | None = Field(None, min_length=1, max_length=128)
    provider: str | None = Field(None, min_length=1, max_length=64)
    dimensions: int | None = Field(None, ge=1, le=MAX_DIMENSIONS)
    normalize: bool = True
    load_balancing: str | None = Field(None, max_length=64)
    input_type: InputType = "document"

    @field_validator("input", mode="before")
    @classmethod
    def _single(cls, value: Any) -> Any:
        return as_list(value)

    @field_validator("load_balancing")
    @classmethod
    def _strategy(cls, name: str | None) -> str | None:
        return check_strategy(name)


@dataclass
class Embeddings:
    vectors: np.ndarray
    provider: str
    model: str
    prompt_tokens: int
    cost_usd: float

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class EmbedOptions:
    model: str | None = None
    provider: str | None = None
    dimensions: int | None = None
    normalize: bool = True
    strategy: str | None = None
    input_type: InputType = "document"


# -------------------------------------------------------------------------------------------------- backends
def _matches(provider: str | None, model: str | None, entry_provider: str, entry_model: str) -> bool:
    entry_id = f"{entry_provider}:{entry_model}"
    return provider in (None, entry_provider, entry_id) and model in (None, entry_model, entry_id)


def _check_target(opts: EmbedOptions, targets: Sequence[tuple[str, str]]) -> None:
    configured = ", ".join(f"{p}:{m}" for p, m in targets)
    if opts.provider is not None and not any(_matches(opts.provider, None, p, m) for p, m in targets):
        raise InvalidInput(f"unknown embedding provider {opts.provider!r} (configured: {configured})",
                           field="provider")
    if not any(_matches(opts.provider, opts.model, p, m) for p, m in targets):
        raise InvalidInput(f"unknown embedding model {opts.model!r} (configured: {configured})", field="model")


def _check_dimensions(opts: EmbedOptions, native: int) -> None:
    if opts.dimensions is not None and opts.dimensions > native:
        raise InvalidInput(f"dimensions must be at most {native} for this model", field="dimensions")


def _pick_entry(manager: EmbeddingManager, opts: EmbedOptions) -> EmbedderEntry:
    """The entry the response reports (the manager keeps all rows of a call on one model)."""
    candidates = [e for e in manager.entries if _matches(opts.provider, opts.model, e.provider, e.model)]
    return min(candidates, key=lambda e: e.priority)


async def _with_manager(manager: EmbeddingManager, texts: list[str], opts: EmbedOptions) -> Embeddings:
    _check_target(opts, [(e.provider, e.model) for e in manager.entries])
    entry = _pick_entry(manager, opts)
    _check_dimensions(opts, entry.backend.dimension)
    narrowed = entry.id if opts.model is not None else opts.provider
    vectors = await manager.aembed(texts, input_type=opts.input_type, strategy=opts.strategy, provider=narrowed)
    tokens = estimate_tokens(texts)
    return Embeddings(vectors, entry.provider, entry.model, tokens, entry.price.cost(Usage(tokens, 0)))


async def _with_default(services: Services, texts: list[str], opts: EmbedOptions) -> Embeddings:
    embedder = services.embedder
    _check_target(opts, [(embedder.provider, embedder.model)])
    _check_dimensions(opts, embedder.dimension)
    vectors = np.asarray(await embedder.embed(texts, input_type=opts.input_type), dtype=np.float32)
    tokens = estimate_tokens(texts)
    cost = price_for(f"{embedder.provider}:{embedder.model}").cost(Usage(tokens, 0))
    return Embeddings(vectors, embedder.provider, embedder.model, tokens, cost)


async def embed_texts(services: Services, texts: list[str], opts: EmbedOptions) -> Embeddings:
    """Embed with the manager (if configured) or the default embedder, then apply dimensions/normalize."""
    manager = services.features.get("embedding_manager")
    if isinstance(manager, EmbeddingManager):
        result = await _with_manager(manager, texts, opts)
    else:
        result = await _with_default(services, texts, opts)
    result.vectors = truncate_dimensions(result.vectors, opts.dimensions, opts.normalize)
    return result


# ----------------------------------------------------------------------------------------------------- route
@router.post("/embeddings", summary="Embed texts (manager when configured, else the batched default embedder)")
async def embeddings(body: EmbeddingsRequest, services: Services = Depends(get_services)) -> dict[str, Any]:
    opts = EmbedOptions(model=body.model, provider=body.provider, dimensions=body.dimensions,
                        normalize=body.normalize, strategy=body.load_balancing, input_type=body.input_type)
    result = await embed_texts(services, body.input, opts)
    return {"data": [{"index": i, "embedding": row.tolist()} for i, row in enumerate(result.vectors)],
            "model": result.model, "provider": result.provider, "dimensions": result.dimensions,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
            "cost_usd": result.cost_usd}


__all__ = ["EmbedOptions", "Embeddings", "EmbeddingsRequest", "embed_texts", "router"]
