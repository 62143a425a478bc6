"""Shared shape of the SDK-backed embedders: batching, error translation, normalisation, ``dimensions``
(by API parameter where the provider has one, else truncation + renormalisation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from rag_ray.embedding.base import truncate_dimensions
from rag_ray.sdk.errors import StatusInfo, translate
from rag_ray.types import InputType


class SDKEmbedder:
    provider = "sdk"
    known_dimensions: ClassVar[Mapping[str, int]] = {}

    def __init__(self, model: str, *, dimensions: int | None = None, batch_size: int = 64):
        self.model = model
        self.dimensions = dimensions
        self.batch_size = max(1, batch_size)
        self._dimension: int | None = dimensions or self.known_dimensions.get(model)

    @property
    def dimension(self) -> int:
        """Known up front for configured/known models; otherwise learned from one probe call."""
        if self._dimension is None:
            self._dimension = int(self.embed(["dimension probe"]).shape[1])
        return self._dimension

    @dimension.setter
    def dimension(self, value: int) -> None:
        self._dimension = value

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        return None

    def _embed_batch(self, texts: list[str], input_type: InputType, dimensions: int | None) -> list[list[float]]:
        """One API call; ``dimensions`` goes to the provider's own parameter (None: the model's size)."""
        raise NotImplementedError

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        vectors = self._embed_all(texts, input_type, self.dimensions)
        self._dimension = int(vectors.shape[1])
        return vectors

    def embed_resized(self, texts: Sequence[str], dimensions: int, *,
                      input_type: InputType = "document") -> np.ndarray:
        """``ResizableEmbedder``: this call's vectors at ``dimensions`` (the configured size is unchanged)."""
        if not texts:
            return np.zeros((0, dimensions), dtype=np.float32)
        return self._embed_all(texts, input_type, dimensions)

    def _embed_all(self, texts: Sequence[str], input_type: InputType, dimensions: int | None) -> np.ndarray:
        rows: list[list[float]] = []
        try:
            for start in range(0, len(texts), self.batch_size):
                rows.extend(self._embed_batch(list(texts[start:start + self.batch_size]), input_type, dimensions))
        except Exception as exc:
            raise translate(exc, provider=self.provider, status_of=self._status_of) from exc
        return truncate_dimensions(np.asarray(rows, dtype=np.float32), dimensions)
