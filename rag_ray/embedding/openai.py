"""OpenAI embeddings (``dimensions`` sent as the API parameter); SDK retries off."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rag_ray.embedding.base import EMBEDDERS, RESIZABLE_EMBEDDERS
from rag_ray.embedding.sdk import SDKEmbedder
from rag_ray.llm.openai import config_error, openai_client_kwargs, openai_status
from rag_ray.llm.sdk import request_id_kw
from rag_ray.sdk.errors import StatusInfo
from rag_ray.types import InputType

DEFAULT_MODEL = "text-embedding-3-small"


class OpenAIEmbedder(SDKEmbedder):
    provider = "openai"
    known_dimensions: ClassVar[Mapping[str, int]] = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                        "text-embedding-ada-002": 1536}

    def __init__(self, model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
                 dimensions: int | None = None, batch_size: int = 256, timeout_s: float = 60.0):
        import openai

        super().__init__(model, dimensions=dimensions, batch_size=batch_size)
        try:
            self._client = openai.OpenAI(**openai_client_kwargs(api_key, base_url, timeout_s))
        except openai.OpenAIError as exc:
            raise config_error(exc, self.provider) from exc

    def _status_of(self, exc: BaseException) -> StatusInfo | None:
        return openai_status(exc)

    def _embed_batch(self, texts: list[str], input_type: InputType, dimensions: int | None) -> list[list[float]]:
        extra: dict[str, Any] = ({"dimensions": dimensions} if dimensions else {}) | request_id_kw()
        response = self._client.embeddings.create(model=self.model, input=texts, encoding_format="float", **extra)
        return [item.embedding for item in sorted(response.data, key=lambda item: item.index)]


@EMBEDDERS.register("openai")
@RESIZABLE_EMBEDDERS.register("openai")
def _create(model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
            **options: Any) -> OpenAIEmbedder:
    dims = options.get("dimensions")
    return OpenAIEmbedder(model or DEFAULT_MODEL, api_key=api_key, base_url=base_url,
                          dimensions=int(dims) if dims else None, batch_size=int(options.get("batch_size") or 256))
