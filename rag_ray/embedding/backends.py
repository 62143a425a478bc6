"""What an embedding manager entry calls: one async ``embed`` over the three kinds of embedder the server has.

- ``ThreadedBackend``: a synchronous ``Embedder`` (a local model, an SDK client) in a worker thread;
- ``ResizingBackend``: a ``ResizableEmbedder`` — also sends ``dimensions`` to the provider's API;
- ``AsyncBackend``: an ``AsyncEmbedder`` (the server's collection embedder: in Serve, a handle to the batched
  embedder deployment).

``resizes`` says whether ``dimensions`` reaches the provider; backends that do not resize return the model's
own size and the caller shortens the rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np

from rag_ray.embedding.base import AsyncEmbedder, Embedder, ResizableEmbedder
from rag_ray.errors import Overloaded, ProviderUnavailable
from rag_ray.types import InputType

E = TypeVar("E", Embedder, AsyncEmbedder)


class EmbedBackend(Protocol):
    provider: str
    model: str
    resizes: bool

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document",
                    dimensions: int | None = None) -> np.ndarray: ...


class _Wrapping(Generic[E]):
    """A backend over one embedder: its identity and size are the embedder's."""

    resizes = False

    def __init__(self, embedder: E):
        self.inner: E = embedder
        self.provider, self.model = embedder.provider, embedder.model

    @property
    def dimension(self) -> int:
        return self.inner.dimension


class ThreadedBackend(_Wrapping[Embedder]):
    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document",
                    dimensions: int | None = None) -> np.ndarray:
        return await asyncio.to_thread(self.inner.embed, list(texts), input_type=input_type)


class ResizingBackend(ThreadedBackend):
    """A ``ThreadedBackend`` whose provider shortens vectors itself (the API's ``dimensions`` parameter)."""

    resizes = True
    inner: ResizableEmbedder

    def __init__(self, embedder: ResizableEmbedder):
        super().__init__(embedder)

    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document",
                    dimensions: int | None = None) -> np.ndarray:
        if dimensions is None:
            return await super().embed(texts, input_type=input_type)
        return await asyncio.to_thread(self.inner.embed_resized, list(texts), dimensions, input_type=input_type)


class AsyncBackend(_Wrapping[AsyncEmbedder]):
    """A full embedder deployment (``Overloaded``) is this entry being unavailable: the manager falls back without
    retrying it, and the final error keeps its ``retry_after`` (503 + Retry-After)."""

    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document",
                    dimensions: int | None = None) -> np.ndarray:
        try:
            return np.asarray(await self.inner.embed(list(texts), input_type=input_type), dtype=np.float32)
        except Overloaded as exc:
            raise ProviderUnavailable(exc.message, provider=f"{self.provider}:{self.model}",
                                      retry_after=exc.retry_after) from exc


__all__ = ["AsyncBackend", "EmbedBackend", "ResizingBackend", "ThreadedBackend"]
