"""Per-model prices (USD per 1M input / output tokens) and cost computation.

Unknown models cost 0 and are flagged ``known=False`` so callers can say the figure is not real.
Prices change; a ProviderSpec's ``input_price``/``output_price`` override this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag_ray.llm.base import Usage


@dataclass(frozen=True)
class Price:
    input_per_m: float = 0.0
    output_per_m: float = 0.0
    known: bool = True

    def cost(self, usage: Usage) -> float:
        return (usage.prompt_tokens * self.input_per_m + usage.completion_tokens * self.output_per_m) / 1_000_000

    @property
    def blended(self) -> float:
        """One number for ranking (assumes a 3:1 input:output token mix, typical of RAG prompts)."""
        return (3 * self.input_per_m + self.output_per_m) / 4


UNKNOWN = Price(0.0, 0.0, known=False)

# provider:model → (input, output) USD per 1M tokens. Local/self-hosted providers are free.
PRICES: dict[str, tuple[float, float]] = {
    "openai:gpt-4o": (2.50, 10.00),
    "openai:gpt-4o-mini": (0.15, 0.60),
    "openai:gpt-4.1": (2.00, 8.00),
    "openai:gpt-4.1-mini": (0.40, 1.60),
    "openai:gpt-4.1-nano": (0.10, 0.40),
    "openai:text-embedding-3-small": (0.02, 0.0),
    "openai:text-embedding-3-large": (0.13, 0.0),
    "anthropic:claude-3-5-haiku-latest": (0.80, 4.00),
    "anthropic:claude-3-5-sonnet-latest": (3.00, 15.00),
    "anthropic:claude-sonnet-4-0": (3.00, 15.00),
    "anthropic:claude-opus-4-0": (15.00, 75.00),
    "google:gemini-2.0-flash": (0.10, 0.40),
    "google:gemini-2.5-flash": (0.30, 2.50),
    "google:gemini-2.5-pro": (1.25, 10.00),
    "google:text-embedding-004": (0.0, 0.0),
}
FREE_PROVIDERS = frozenset({"local", "fake", "ollama"})


def price_for(model_id: str, *, input_price: float | None = None, output_price: float | None = None) -> Price:
    """The price of ``provider:model``: explicit override, table entry, free local provider, or UNKNOWN."""
    if input_price is not None or output_price is not None:
        return Price(input_price or 0.0, output_price or 0.0)
    provider, _, model = model_id.partition(":")
    table = PRICES.get(f"{provider}:{model}") or PRICES.get(f"{provider}:{model.lower()}")
    if table is not None:
        return Price(*table)
    return Price(0.0, 0.0) if provider in FREE_PROVIDERS else UNKNOWN


def cost_usd(model_id: str, usage: Usage) -> tuple[float, bool]:
    """(cost, known) for a usage on a model from the table."""
    price = price_for(model_id)
    return price.cost(usage), price.known
