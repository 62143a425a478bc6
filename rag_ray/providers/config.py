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
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from rag_ray.config import Settings
from rag_ray.errors import ConfigError
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


def llm_entry(spec: ProviderSpec, *, breaker: CircuitBreaker | None = None) -> LLMEntry:
    from rag_ray.llm import LLMS, load_providers

    load_providers()
    llm = LLMS.create(spec.provider, spec.model, api_key=spec.secret(), base_url=spec.base_url, **spec.options)
    return LLMEntry.of(llm, id=spec.id, weight=spec.weight, priority=spec.priority, max_context=spec.max_context,
                       price=price_for(spec.id, input_price=spec.input_price, output_price=spec.output_price),
                       breaker=breaker)


def embedder_entry(spec: ProviderSpec, *, breaker: CircuitBreaker | None = None) -> EmbedderEntry:
    from rag_ray.embedding import EMBEDDERS, load_providers

    load_providers()
    embedder = EMBEDDERS.create(spec.provider, spec.model, api_key=spec.secret(), base_url=spec.base_url,
                                **spec.options)
    return EmbedderEntry.of(embedder, id=spec.id, weight=spec.weight, priority=spec.priority, breaker=breaker,
                            price=price_for(spec.id, input_price=spec.input_price, output_price=spec.output_price))


def build_llm_manager(settings: Settings, specs: list[ProviderSpec] | None = None, *,
                      strategy: str | None = None, breaker_config: BreakerConfig | None = None,
                      clock: Clock = time.monotonic, **manager_options: Any) -> LLMManager:
    """An ``LLMManager`` from explicit specs, else ``RAG_LLM_PROVIDERS``, else the seed's single LLM."""
    configured: str | None = None
    if specs is None:
        specs, configured = _specs_from(settings.llm_providers_json, "RAG_LLM_PROVIDERS", default_llm_spec(settings))
    entries = [llm_entry(spec, breaker=_breaker(breaker_config, clock)) for spec in specs]
    return LLMManager(entries, strategy=strategy or configured or "round_robin", clock=clock,
                      policy=RetryPolicy(max_retries=settings.llm_max_retries), **manager_options)


def build_embedding_manager(settings: Settings, specs: list[ProviderSpec] | None = None, *,
                            strategy: str | None = None, breaker_config: BreakerConfig | None = None,
                            clock: Clock = time.monotonic, **manager_options: Any) -> EmbeddingManager:
    """An ``EmbeddingManager`` from explicit specs, else ``RAG_EMBEDDING_PROVIDERS``, else the seed's embedder."""
    configured: str | None = None
    if specs is None:
        specs, configured = _specs_from(settings.embedding_providers_json, "RAG_EMBEDDING_PROVIDERS",
                                        default_embedding_spec(settings))
    entries = [embedder_entry(spec, breaker=_breaker(breaker_config, clock)) for spec in specs]
    return EmbeddingManager(entries, strategy=strategy or configured or "round_robin", clock=clock,
                            policy=RetryPolicy(max_retries=settings.llm_max_retries), **manager_options)
