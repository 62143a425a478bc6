"""Provider lists from configuration: ``ProviderSpec`` and the manager builders.

With no list, the seed's single ``LLM_PROVIDER``/``LLM_MODEL``/``LLM_API_KEY``/``LLM_BASE_URL`` is used.
``RAG_LLM_PROVIDERS`` (and ``RAG_EMBEDDING_PROVIDERS``) hold JSON: a list of specs, or
``{"strategy": "least_loaded", "providers": [...]}``. Example::

    [{"id": "openai:gpt-4o-mini", "api_key": "sk-…", "priority": 0, "max_context": 128000},
     {"id": "ollama:llama3.2", "base_url": "http://gpu-box:11434", "priority": 1}]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from rag_ray.config import Settings
from rag_ray.embedding.backends import EmbedBackend, ResizingBackend, ThreadedBackend
from rag_ray.errors import ConfigError
from rag_ray.llm.base import LLM
from rag_ray.providers.breaker import BreakerConfig, CircuitBreaker, Clock
from rag_ray.providers.manager import EmbedderEntry, EmbeddingManager, LLMEntry, LLMManager
from rag_ray.providers.pricing import price_for
from rag_ray.providers.retry import RetryPolicy
from rag_ray.registry import split_model_id


class ProviderSpec(BaseModel):
    id: str = Field(description="provider:model, e.g. openai:gpt-4o-mini")
    api_key: SecretStr | None = None
    base_url: str | None = None
    weight: float = Field(default=1.0, gt=0)
    priority: int = 0
    input_price: float | None = Field(default=None, ge=0, description="USD per 1M input tokens (overrides the table)")
    output_price: float | None = Field(default=None, ge=0, description="USD per 1M output tokens")
    max_context: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict, description="extra factory options (timeout_s, …)")

    @field_validator("id")
    @classmethod
    def _has_provider(cls, value: str) -> str:
        provider, model = split_model_id(value)
        return f"{provider}:{model}"

    @property
    def provider(self) -> str:
        return self.id.partition(":")[0]

    @property
    def model(self) -> str:
        return self.id.partition(":")[2]

    def secret(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


def parse_specs(raw: str, field: str) -> tuple[list[ProviderSpec], str | None]:
    """JSON list of specs (or {"strategy", "providers"}) → (specs, strategy)."""
    try:
        data = json.loads(raw)
        strategy = data.get("strategy") if isinstance(data, dict) else None
        items = data.get("providers", []) if isinstance(data, dict) else data
        return [ProviderSpec.model_validate(item) for item in items], strategy
    except (json.JSONDecodeError, ValidationError, AttributeError, TypeError) as exc:
        # The message names the field, never echoes the value (it may hold API keys).
        raise ConfigError(f"{field} is not a valid provider list: {type(exc).__name__}", field=field) from None


def configured_llm_specs(settings: Settings) -> tuple[list[ProviderSpec], str | None]:
    """The LLMs to host and the strategy: ``RAG_LLM_PROVIDERS`` when set (never empty), else the seed's one LLM."""
    return _specs_from(settings.llm_providers_json, "RAG_LLM_PROVIDERS", default_llm_spec(settings))


def _specs_from(settings_json: SecretStr | None, field: str, fallback: ProviderSpec
                ) -> tuple[list[ProviderSpec], str | None]:
    if settings_json is not None and settings_json.get_secret_value().strip():
        specs, strategy = parse_specs(settings_json.get_secret_value(), field)
        if not specs:
            raise ConfigError(f"{field} lists no providers", field=field)
        return specs, strategy
    return [fallback], None


def default_llm_spec(settings: Settings) -> ProviderSpec:
    return ProviderSpec(id=f"{settings.llm_provider.lower()}:{settings.llm_model}", api_key=settings.llm_api_key,
                        base_url=settings.llm_base_url)


def default_embedding_spec(settings: Settings) -> ProviderSpec:
    return ProviderSpec(id=f"{settings.embedding_provider.lower()}:{settings.embedding_model}",
                        api_key=settings.embedding_api_key, base_url=settings.embedding_base_url,
                        options={"batch_size": settings.embedding_batch_size,
                                 "threads": settings.embedding_threads})


def _breaker(config: BreakerConfig | None, clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(config, clock=clock)


def create_llm_backend(spec: ProviderSpec) -> LLM:
    """The provider adapter for ``spec``, from the LLM registry (``openai:gpt-4o`` → the openai module)."""
    from rag_ray.llm import LLMS, load_providers

    load_providers()
    return LLMS.create(spec.provider, spec.model, api_key=spec.secret(), base_url=spec.base_url, **spec.options)


def llm_entry(spec: ProviderSpec, *, breaker: CircuitBreaker | None = None,
              create: Callable[[ProviderSpec], LLM] = create_llm_backend) -> LLMEntry:
    """``spec`` as a manager entry over ``create(spec)`` (the registry's adapter, or a handle to a deployment)."""
    return LLMEntry.of(create(spec), id=spec.id, weight=spec.weight, priority=spec.priority,
                       max_context=spec.max_context, breaker=breaker,
                       price=price_for(spec.id, input_price=spec.input_price, output_price=spec.output_price))


def configured_embedding_specs(settings: Settings, default: ProviderSpec | None = None
                               ) -> tuple[list[ProviderSpec], str | None]:
    """The embedders ``/embeddings`` offers and the strategy: ``RAG_EMBEDDING_PROVIDERS`` when set (never empty),
    else ``default`` (by default the seed's one ``EMBEDDING_PROVIDER``/``EMBEDDING_MODEL``)."""
    return _specs_from(settings.embedding_providers_json, "RAG_EMBEDDING_PROVIDERS",
                       default or default_embedding_spec(settings))


def create_embed_backend(spec: ProviderSpec) -> EmbedBackend:
    """The adapter for ``spec`` from the embedder registries: one that sends ``dimensions`` to the provider
    (``RESIZABLE_EMBEDDERS``) for models whose API shortens server-side, else the plain one in a worker thread."""
    from rag_ray.embedding import load_providers
    from rag_ray.embedding.base import EMBEDDERS, RESIZABLE_EMBEDDERS
    from rag_ray.embedding.dimensions import matryoshka

    load_providers()
    options: dict[str, Any] = {"api_key": spec.secret(), "base_url": spec.base_url, **spec.options}
    shape = matryoshka(spec.model)
    if shape is not None and shape.api_parameter and spec.provider in RESIZABLE_EMBEDDERS.names():
        return ResizingBackend(RESIZABLE_EMBEDDERS.create(spec.provider, spec.model, **options))
    return ThreadedBackend(EMBEDDERS.create(spec.provider, spec.model, **options))


def embedder_entry(spec: ProviderSpec, *, breaker: CircuitBreaker | None = None,
                   create: Callable[[ProviderSpec], EmbedBackend] = create_embed_backend) -> EmbedderEntry:
    """``spec`` as a manager entry over ``create(spec)`` (the registry's adapter, or the collection embedder)."""
    return EmbedderEntry.over(create(spec), id=spec.id, weight=spec.weight, priority=spec.priority, breaker=breaker,
                              price=price_for(spec.id, input_price=spec.input_price, output_price=spec.output_price))


def build_llm_manager(settings: Settings, specs: list[ProviderSpec] | None = None, *,
                      strategy: str | None = None, breaker_config: BreakerConfig | None = None,
                      clock: Clock = time.monotonic, create: Callable[[ProviderSpec], LLM] = create_llm_backend,
                      **manager_options: Any) -> LLMManager:
    """An ``LLMManager`` from explicit specs, else ``RAG_LLM_PROVIDERS``, else the seed's single LLM; ``create``
    makes each entry's engine (in Serve: a handle to that provider's deployment)."""
    configured: str | None = None
    if specs is None:
        specs, configured = configured_llm_specs(settings)
    entries = [llm_entry(spec, breaker=_breaker(breaker_config, clock), create=create) for spec in specs]
    return LLMManager(entries, strategy=strategy or configured or "round_robin", clock=clock,
                      policy=RetryPolicy(max_retries=settings.llm_max_retries), **manager_options)


def build_embedding_manager(settings: Settings, specs: list[ProviderSpec] | None = None, *,
                            strategy: str | None = None, breaker_config: BreakerConfig | None = None,
                            clock: Clock = time.monotonic,
                            create: Callable[[ProviderSpec], EmbedBackend] = create_embed_backend,
                            **manager_options: Any) -> EmbeddingManager:
    """An ``EmbeddingManager`` from explicit specs, else ``RAG_EMBEDDING_PROVIDERS``, else the seed's embedder;
    ``create`` makes each entry's backend. The cache holds ``RAG_EMBEDDING_CACHE_SIZE`` vectors."""
    configured: str | None = None
    if specs is None:
        specs, configured = configured_embedding_specs(settings)
    entries = [embedder_entry(spec, breaker=_breaker(breaker_config, clock), create=create) for spec in specs]
    options = {"cache_size": settings.embedding_cache_size, **manager_options}
    return EmbeddingManager(entries, strategy=strategy or configured or "round_robin", clock=clock,
                            policy=RetryPolicy(max_retries=settings.llm_max_retries), **options)
