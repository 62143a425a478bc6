"""Gemini embeddings through google-genai (``output_dimensionality`` as the API parameter)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rag_ray.embedding.base import EMBEDDERS, RESIZABLE_EMBEDDERS
from rag_ray.embedding.sdk import SDKEmbedder
from rag_ray.llm.google import google_client, google_status
from rag_ray.sdk.errors import StatusInfo
from rag_ray.types import InputType

DEFAULT_MODEL = "text-embedding-004"
_TASKS: dict[str, str] = {"query": "RETRIEVAL_QUERY", "document": "RETRIEVAL_DOCUMENT"}


class GoogleEmbedder(SDKEmbedder):
    provider = "google"
    known_dimensions: ClassVar[Mapping[str, int]] = {"text-embedding-004": 768, "gemini-embedding-001": 3072}

    def __init__(self, model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
                 dimensions: int | None = None, batch_size: int = 100, timeout_s: float = 60.0):
        super().__init__(model, dimensions=dimensions, batch_size=batch_size)
        self._client = google_client(api_key, base_url, timeout_s)

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        return google_status(exc)

    def _embed_batch(self, texts: list[str], input_type: InputType, dimensions: int | None) -> list[list[float]]:
        from google.genai import types

        config = types.EmbedContentConfig(task_type=_TASKS[input_type], output_dimensionality=dimensions)
        response = self._client.models.embed_content(model=self.model, contents=texts, config=config)
        return [list(e.values or []) for e in response.embeddings or []]


@EMBEDDERS.register("google")
@RESIZABLE_EMBEDDERS.register("google")
def _create(model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
            **options: Any) -> GoogleEmbedder:
    dims = options.get("dimensions")
    return GoogleEmbedder(model or DEFAULT_MODEL, api_key=api_key, base_url=base_url,
                          dimensions=int(dims) if dims else None, batch_size=int(options.get("batch_size") or 100))
