"""Which embedding models may be shortened (the ``dimensions`` request field), and how.

Only models trained for it (Matryoshka representation learning) keep their quality when a vector is cut to its
first ``d`` components and renormalised; for any other model a ``dimensions`` request is refused (422 naming
``dimensions``) instead of being silently degraded. Some provider APIs shorten server-side
(``api_parameter``): the embedding service sends the parameter when the entry's adapter can
(``RESIZABLE_EMBEDDERS``) and truncates otherwise — the same result for these models (OpenAI documents
truncate-then-renormalise as equivalent to its ``dimensions`` parameter).

The table is keyed by model family: the model name in lower case without an Ollama tag (``:latest``, ``:v1.5``)
or an organisation/path prefix, so ``ollama:nomic-embed-text:latest`` and ``local:nomic-ai/nomic-embed-text-v1.5``
both match. Add a model only when its model card says it was trained with Matryoshka loss.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Matryoshka:
    native: int  # the model's full vector size: the largest ``dimensions`` it accepts
    # the provider's API shortens server-side (OpenAI ``dimensions``, Gemini ``output_dimensionality``)
    api_parameter: bool = False


MATRYOSHKA_MODELS: dict[str, Matryoshka] = {
    "text-embedding-3-small": Matryoshka(1536, api_parameter=True),  # OpenAI
    "text-embedding-3-large": Matryoshka(3072, api_parameter=True),
    "text-embedding-004": Matryoshka(768, api_parameter=True),  # Gemini
    "gemini-embedding-001": Matryoshka(3072, api_parameter=True),
    "nomic-embed-text": Matryoshka(768),  # Ollama's name for nomic-embed-text-v1.5
    "nomic-embed-text-v1.5": Matryoshka(768),
    "mxbai-embed-large": Matryoshka(1024),  # Ollama's name for mxbai-embed-large-v1
    "mxbai-embed-large-v1": Matryoshka(1024),
    "embeddinggemma": Matryoshka(768),
    "embeddinggemma-300m": Matryoshka(768),
}


def model_family(model: str) -> str:
    """``nomic-ai/nomic-embed-text-v1.5`` → ``nomic-embed-text-v1.5``; ``nomic-embed-text:latest`` →
    ``nomic-embed-text``."""
    name = model.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    return name.split(":", 1)[0]


def matryoshka(model: str) -> Matryoshka | None:
    """How ``model`` may be shortened, or None when it may not."""
    return MATRYOSHKA_MODELS.get(model_family(model))


__all__ = ["MATRYOSHKA_MODELS", "Matryoshka", "matryoshka", "model_family"]
