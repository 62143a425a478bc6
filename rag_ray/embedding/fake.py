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
    """``provider`` lets it stand in for another provider's model (a test's ``local:all-MiniLM-L6-v2``)."""

    def __init__(self, model: str = "hash-bow", dimension: int = 64, *, provider: str = "fake", salt: bytes = b""):
        self.provider = provider
        self.model = model
        self.dimension = dimension
        self.salt = salt  # another salt: another vector space of the same quality (a "new model" in tests)
        self.calls = 0
        self.batch_size = 16  # texts per call when ingest sizes its batches (rag_ray.ingest.batching)

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                digest = hashlib.blake2b(token.encode(), digest_size=8, key=self.salt).digest()
                out[row, int.from_bytes(digest[:4], "little") % self.dimension] += 1.0
            out[row, 0] += 1e-3  # never the zero vector
        return l2_normalize(out)


class ConstantEmbedder(FakeEmbedder):
    """A deliberately useless model: every text gets the same vector (what an evaluation gate must refuse)."""

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        self.calls += 1
        return l2_normalize(np.ones((len(texts), self.dimension), dtype=np.float32))


# Named fakes: ``fake:hash-bow-v2`` is an equally good model with other vectors and another dimension,
# ``fake:constant`` a worse one (index rebuild / switch tests).
VARIANT_DIMENSIONS = {"hash-bow-v2": 96, "constant": 64}
VARIANT_SALTS = {"hash-bow-v2": b"v2"}


@EMBEDDERS.register("fake")
def _create(model: str = "hash-bow", **options: object) -> FakeEmbedder:
    model = model or "hash-bow"
    dimension = int(options.get("dimension", VARIANT_DIMENSIONS.get(model, 64)))  # type: ignore[call-overload]
    if model == "constant":
        return ConstantEmbedder(model=model, dimension=dimension)
    return FakeEmbedder(model=model, dimension=dimension, salt=VARIANT_SALTS.get(model, b""))
