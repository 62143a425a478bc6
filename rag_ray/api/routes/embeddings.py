"""``POST /embeddings``: vectors for texts through the embedding service (``services.embeddings``:
``rag_ray.providers.embeddings``: provider/model selection, load balancing, retries, fallback, cache, dimensions).

Body (the seed's): ``{input: [...] | "text", model?, provider?, dimensions?, normalize?, load_balancing?,
input_type?}``. ``model`` is a model name or a ``provider:model`` id, ``provider`` a provider name or id;
``dimensions`` is sent to the provider where its API has the parameter (OpenAI ``text-embedding-3-*``), else the
vectors are truncated and renormalised — only for models trained for it (Matryoshka); ``normalize`` (default
true) L2-normalises the rows. The response names the ``provider`` and ``model`` that served every row, the
``usage``, the ``cost_usd`` of this call and how many rows came from the cache (``cached``).
``encoding_format`` is OpenAI's: ``float`` (default, JSON numbers) or ``base64`` (each row is the base64 of its
little-endian float32 bytes: a quarter of the JSON size and no float formatting). Responses are written by
orjson straight from the numpy rows (no ``tolist``, no response-model validation of 384+ floats per row).

Caps (422 naming the field): ``input`` 1..512 items, each 1..32,000 characters; ``dimensions`` 1..8192 and at
most the model's size; ``model`` ≤ 128 and ``provider`` ≤ 64 characters; unknown fields are refused. An
unknown provider or model is a 422 naming ``provider`` / ``model``; ``dimensions`` on a model that cannot
shorten its vectors is a 422 naming ``dimensions``.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_ray.api.deps import ServicesDep, current_principal
from rag_ray.api.routes.chat import check_strategy
from rag_ray.providers.embeddings import EmbeddingService, EmbedRequest, EmbedResult
from rag_ray.types import InputType

router = APIRouter(tags=["embeddings"], dependencies=[Depends(current_principal)])

MAX_INPUTS = 512
MAX_INPUT_CHARS = 32_000
MAX_DIMENSIONS = 8192

Text = Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]
EncodingFormat = Literal["float", "base64"]


def as_list(value: Any) -> Any:
    """A single string is a one-item batch."""
    return [value] if isinstance(value, str) else value


async def embedding_service(services: ServicesDep) -> EmbeddingService:
    return services.embeddings


EmbeddingsDep = Annotated[EmbeddingService, Depends(embedding_service)]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"input": ["머신러닝이란 무엇인가?", "딥러닝과 머신러닝의 차이점"], "model": "text-embedding-3-large",
         "dimensions": 1024, "normalize": True}]})

    input: list[Text] = Field(min_length=1, max_length=MAX_INPUTS)
    model: str | None = Field(None, min_length=1, max_length=128)
    provider: str | None = Field(None, min_length=1, max_length=64)
    dimensions: int | None = Field(None, ge=1, le=MAX_DIMENSIONS)
    normalize: bool = True
    load_balancing: str | None = Field(None, max_length=64)
    input_type: InputType = "document"
    encoding_format: EncodingFormat = "float"

    @field_validator("input", mode="before")
    @classmethod
    def _single(cls, value: Any) -> Any:
        return as_list(value)

    @field_validator("load_balancing")
    @classmethod
    def _strategy(cls, name: str | None) -> str | None:
        return check_strategy(name)

    def to_request(self) -> EmbedRequest:
        return EmbedRequest(self.input, model=self.model, provider=self.provider, dimensions=self.dimensions,
                            normalize=self.normalize, strategy=self.load_balancing, input_type=self.input_type)


def usage(result: EmbedResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}


def encode_vector(row: np.ndarray, encoding: EncodingFormat) -> str | np.ndarray:
    """OpenAI's base64 is the row's little-endian float32 bytes; float rows stay arrays for orjson to write."""
    if encoding == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(row, dtype=np.float32)


class VectorsResponse(JSONResponse):
    """JSON with numpy rows written natively (no ``tolist`` and no per-float formatting in Python)."""

    def render(self, content: Any) -> bytes:
        import orjson

        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


@router.post("/embeddings", summary="Embed texts (provider/model selection, load balancing, cache, dimensions)",
             response_class=VectorsResponse)
async def embeddings(body: EmbeddingsRequest, service: EmbeddingsDep) -> VectorsResponse:
    result = await service.embed(body.to_request())
    data = [{"index": i, "embedding": encode_vector(row, body.encoding_format)} for i, row in enumerate(result.vectors)]
    return VectorsResponse({"data": data, "model": result.model, "provider": result.provider,
                            "dimensions": result.dimensions, "usage": usage(result), "cost_usd": result.cost_usd,
                            "cached": result.cached})


__all__ = ["EmbeddingsDep", "EmbeddingsRequest", "EncodingFormat", "VectorsResponse", "as_list", "embedding_service",
           "encode_vector", "router", "usage"]
