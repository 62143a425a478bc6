"""A deterministic embedder for tests: hashed bag of words, so similar texts get similar vectors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from rag_ray.embedding.base import EMBEDDERS, l2_normalize
from rag_ray.types import InputType

_TOKEN = re.compile(r"\w+", re.UNICODE)


class FakeEmbedder:
    provider = "fake"

    def __init__(self, model: str = "hash-bow", dimension: int = 64):
        self.model = model
        self.dimension = dimension
        self.calls = 0

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                out[row, int.from_bytes(digest[:4], "little") % self.dimension] += 1.0
            out[row, 0] += 1e-3  # never the zero vector
        return l2_normalize(out)


@EMBEDDERS.register("fake")
def _create(model: str = "hash-bow", **options: object) -> FakeEmbedder:
    dimension = int(options.get("dimension", 64))  # type: ignore[call-overload]
    return FakeEmbedder(model=model or "hash-bow", dimension=dimension)
