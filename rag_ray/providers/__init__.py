"""LLM / embedding provider management: load balancing, retries, circuit breakers, fallback, cost."""

from rag_ray.providers.breaker import BreakerConfig, BreakerState, CircuitBreaker
from rag_ray.providers.config import ProviderSpec, build_embedding_manager, build_llm_manager
from rag_ray.providers.manager import EmbedderEntry, EmbeddingManager, LLMEntry, LLMManager
from rag_ray.providers.pricing import Price, price_for
from rag_ray.providers.retry import Deadline, RetryPolicy
from rag_ray.providers.strategies import STRATEGIES

__all__ = ["STRATEGIES", "BreakerConfig", "BreakerState", "CircuitBreaker", "Deadline", "EmbedderEntry",
           "EmbeddingManager", "LLMEntry", "LLMManager", "Price", "ProviderSpec", "RetryPolicy",
           "build_embedding_manager", "build_llm_manager", "price_for"]
