"""The embedder interface: one method, ``embed``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from rag_ray.registry import Registry
from rag_ray.types import InputType


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of ``dimension`` floats."""

    provider: str
    model: str
    dimension: int

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        """Return a float32 array of shape (len(texts), dimension)."""
        ...


@runtime_checkable
class BatchedEmbedder(Embedder, Protocol):
    """An embedder that encodes (or requests) ``batch_size`` texts at a time; ingest may tune that size."""

    batch_size: int


class AsyncEmbedder(Protocol):
    """``Embedder`` with an async ``embed`` (a thread-offloaded model, a handle to the Serve embedder deployment)."""

    provider: str
    model: str

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray: ...


class ResizableEmbedder(Embedder, Protocol):
    """An embedder whose provider API returns shorter vectors on request (OpenAI ``dimensions``, Gemini
    ``output_dimensionality``). Providers register their factory in ``RESIZABLE_EMBEDDERS`` as well."""

    def embed_resized(self, texts: Sequence[str], dimensions: int, *,
                      input_type: InputType = "document") -> np.ndarray:
        """Like ``embed``, asking the provider for ``dimensions``-long vectors."""
        ...


EMBEDDERS: Registry[Embedder] = Registry("embedding provider")
RESIZABLE_EMBEDDERS: Registry[ResizableEmbedder] = Registry("embedding provider with a dimensions parameter")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)


def truncate_dimensions(vectors: np.ndarray, dimensions: int | None, normalize: bool = True) -> np.ndarray:
    """Matryoshka-style truncation (then renormalise) for providers without a ``dimensions`` parameter."""
    if dimensions is not None and dimensions < vectors.shape[1]:
        vectors = vectors[:, :dimensions]
    return l2_normalize(vectors) if normalize else vectors.astype(np.float32)
