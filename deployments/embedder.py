"""Embedding deployment: requests from many callers are batched together with ``@serve.batch``.

The batch wait is short on purpose: requests that arrive while a batch is encoding queue up and form the next
batch anyway, so a long wait only adds latency to a lone request (10 ms was a third of /query's HTTP overhead).
``max_batch_size`` and ``batch_wait_timeout_s`` can be changed live through the deployment's ``user_config``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError

from rag_ray.config import Settings
from rag_ray.embedding import create_embedder
from rag_ray.errors import Overloaded
from rag_ray.types import InputType

MAX_BATCH_SIZE = 64
BATCH_WAIT_S = 0.002  # see the module note: a longer wait only delays a lone request


class EmbedderDeployment:
    def __init__(self, settings: Settings, max_batch_size: int = MAX_BATCH_SIZE,
                 batch_wait_timeout_s: float = BATCH_WAIT_S):
        self.embedder = create_embedder(settings)
        self.provider, self.model, self.dimension = (self.embedder.provider, self.embedder.model,
                                                     self.embedder.dimension)
        self.reconfigure({"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve calls this with the deployment's ``user_config`` (serve_config.yaml), also on live updates."""
        if "max_batch_size" in user_config:
            self._embed_batched.set_max_batch_size(int(user_config["max_batch_size"]))  # type: ignore[attr-defined]
        if "batch_wait_timeout_s" in user_config:
            self._embed_batched.set_batch_wait_timeout_s(  # type: ignore[attr-defined]  # @serve.batch API
                float(user_config["batch_wait_timeout_s"]))

    def info(self) -> dict[str, object]:
        return {"provider": self.provider, "model": self.model, "dimension": self.dimension}

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _embed_batched(self, requests: list[tuple[tuple[str, ...], InputType]]) -> list[np.ndarray]:
        # One model call for every text of every request in the batch, then split per request.
        by_type: dict[InputType, list[int]] = {}
        for i, (_, input_type) in enumerate(requests):
            by_type.setdefault(input_type, []).append(i)
        results: list[np.ndarray] = [np.zeros((0, self.dimension), np.float32)] * len(requests)
        for input_type, indices in by_type.items():
            texts = [t for i in indices for t in requests[i][0]]
            vectors = self.embedder.embed(texts, input_type=input_type)
            offset = 0
            for i in indices:
                n = len(requests[i][0])
                results[i] = vectors[offset:offset + n]
                offset += n
        return results

    async def embed(self, texts: Sequence[str], input_type: InputType = "document") -> np.ndarray:
        return await self._embed_batched((tuple(texts), input_type))

    async def embed_unbatched(self, texts: Sequence[str], input_type: InputType = "document") -> np.ndarray:
        return self.embedder.embed(list(texts), input_type=input_type)


class HandleEmbedder:
    """The AsyncEmbedder protocol over a handle to ``EmbedderDeployment`` (used by the router)."""

    def __init__(self, handle: serve.handle.DeploymentHandle, info: dict[str, object], batched: bool = True):
        self.handle = handle
        self.provider, self.model = str(info["provider"]), str(info["model"])
        self.dimension = int(info["dimension"])  # type: ignore[call-overload]
        self.method = "embed" if batched else "embed_unbatched"

    async def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        try:
            return await getattr(self.handle, self.method).remote(list(texts), input_type)
        except BackPressureError as exc:
            raise Overloaded("the embedder is at capacity; retry shortly", retry_after=exc.retry_after_s or 1.0) \
                from None
