"""Ollama embeddings via /api/embed (sync ``ollama.Client``; ``host`` = base_url, else OLLAMA_HOST).
``dimensions`` is sent and, for servers/models that ignore it, also applied by truncation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rag_ray.embedding.base import EMBEDDERS
from rag_ray.embedding.sdk import SDKEmbedder
from rag_ray.llm.ollama import ollama_status
from rag_ray.sdk.errors import StatusInfo
from rag_ray.types import InputType

DEFAULT_MODEL = "nomic-embed-text"


class OllamaEmbedder(SDKEmbedder):
    provider = "ollama"
    known_dimensions: ClassVar[Mapping[str, int]] = {"nomic-embed-text": 768, "mxbai-embed-large": 1024,
                                                     "all-minilm": 384}

    def __init__(self, model: str = DEFAULT_MODEL, *, base_url: str | None = None, dimensions: int | None = None,
                 batch_size: int = 64, timeout_s: float = 120.0):
        import ollama

        super().__init__(model, dimensions=dimensions, batch_size=batch_size)
        self._client = ollama.Client(host=base_url or None, timeout=timeout_s)

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        return ollama_status(exc)

    def _embed_batch(self, texts: list[str], input_type: InputType, dimensions: int | None) -> list[list[float]]:
        response = self._client.embed(model=self.model, input=texts, dimensions=dimensions)
        return [list(row) for row in response.embeddings]


@EMBEDDERS.register("ollama")
def _create(model: str = DEFAULT_MODEL, *, base_url: str | None = None, **options: Any) -> OllamaEmbedder:
    dims = options.get("dimensions")
    return OllamaEmbedder(model or DEFAULT_MODEL, base_url=base_url, dimensions=int(dims) if dims else None,
                          batch_size=int(options.get("batch_size") or 64))
