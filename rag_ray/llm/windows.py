"""How big a model's context window is, and how to count tokens for it.

A window comes from, in order:

1. the provider spec (``RAG_LLM_PROVIDERS`` ``max_context``, i.e. ``LLMEntry.max_context``) — the operator knows best;
2. the adapter itself, when it enforces one (``HasContextWindow``: the local ``TransformersLLM`` refuses prompts
   beyond its ``max_context``; ``OllamaLLM`` sends ``num_ctx``). When both are known the smaller wins;
3. ``KNOWN_MODELS``: a small table by provider and model-name prefix (longest prefix wins);
4. ``DEFAULT_WINDOW`` (4,096): conservative, for anything unknown.

Counting: an adapter with its own tokenizer offers ``CountsTokens`` (the local model does; a Serve handle may
forward it). Without one, tokens are estimated from characters with the model's ``TokenProfile`` — measured for
SmolLM2 (its byte-level vocabulary spends ~2.8 tokens per Hangul syllable and ~3.3 characters per token on
Markdown), the generic ``estimate_tokens`` ratios (4 characters per Latin token, 1.5 Hangul characters per token)
for the big hosted models, and a conservative profile in between for Ollama and unknown models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from rag_ray.llm.base import ChatMessage

DEFAULT_WINDOW = 4096
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators of one chat message
PROMPT_OVERHEAD_TOKENS = 4  # the assistant turn opener

WindowSource = Literal["spec", "adapter", "table", "default"]

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


@runtime_checkable
class CountsTokens(Protocol):
    """An adapter that can count a chat prompt exactly as it will send it (chat template included)."""

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int: ...


@runtime_checkable
class HasContextWindow(Protocol):
    """An adapter that knows (and enforces) its own window, prompt plus new tokens; None: it does not know."""

    @property
    def context_window(self) -> int | None: ...


@dataclass(frozen=True)
class TokenProfile:
    """Character-based token estimate: Latin (and everything else) by ``latin_chars_per_token``, Hangul syllables
    by ``hangul_tokens_per_char``. ``scale`` corrects a profile after the model reported a real count."""

    latin_chars_per_token: float = 4.0
    hangul_tokens_per_char: float = 1 / 1.5
    scale: float = 1.0

    def tokens(self, text: str) -> int:
        hangul = len(_HANGUL.findall(text))
        raw = hangul * self.hangul_tokens_per_char + (len(text) - hangul) / self.latin_chars_per_token
        return math.ceil(raw * self.scale)

    def messages(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages) + PROMPT_OVERHEAD_TOKENS

    def scaled(self, factor: float) -> TokenProfile:
        return TokenProfile(self.latin_chars_per_token, self.hangul_tokens_per_char, self.scale * factor)


HOSTED = TokenProfile()  # large vocabularies (GPT-4o, Claude, Gemini): textutil.estimate_tokens' ratios
SMOLLM2 = TokenProfile(latin_chars_per_token=3.0, hangul_tokens_per_char=2.9)
CONSERVATIVE = TokenProfile(latin_chars_per_token=3.5, hangul_tokens_per_char=1.3)


@dataclass(frozen=True)
class KnownModel:
    provider: str
    prefix: str  # lower-case model-name prefix; "" matches any model of the provider
    window: int
    profile: TokenProfile = CONSERVATIVE


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("local", "", 2048, SMOLLM2),  # TransformersLLM's default max_context (SmolLM2-135M-Instruct)
    KnownModel("ollama", "", 2048),  # Ollama's default num_ctx, whatever the model could do
    KnownModel("openai", "gpt-4o", 128_000, HOSTED),
    KnownModel("openai", "gpt-4.1", 1_047_576, HOSTED),
    KnownModel("openai", "gpt-4-turbo", 128_000, HOSTED),
    KnownModel("openai", "gpt-4", 8_192, HOSTED),
    KnownModel("openai", "gpt-3.5-turbo", 16_385, HOSTED),
    KnownModel("openai", "o1", 200_000, HOSTED),
    KnownModel("openai", "o3", 200_000, HOSTED),
    KnownModel("openai", "o4", 200_000, HOSTED),
    KnownModel("anthropic", "claude", 200_000, HOSTED),
    KnownModel("google", "gemini", 1_048_576, HOSTED),
)


def known_model(provider: str, model: str) -> KnownModel | None:
    """The table row for ``provider``/``model`` (longest matching prefix), or None."""
    name = model.lower()
    rows = [r for r in KNOWN_MODELS if r.provider == provider.lower() and name.startswith(r.prefix)]
    return max(rows, key=lambda r: len(r.prefix), default=None)


@dataclass(frozen=True)
class WindowSpec:
    """The resolved window of one provider entry and how to count tokens for it."""

    provider_id: str
    tokens: int
    source: WindowSource
    profile: TokenProfile = CONSERVATIVE
    counter: CountsTokens | None = None

    @property
    def counted_with(self) -> Literal["tokenizer", "estimate"]:
        return "tokenizer" if self.counter is not None else "estimate"

    @property
    def margin(self) -> int:
        """Tokens kept free for what counting cannot see: a few with the model's tokenizer, ~3 % when estimated."""
        return 8 if self.counter is not None else max(16, self.tokens // 32)

    async def count(self, messages: Sequence[ChatMessage]) -> int:
        if self.counter is not None:
            return await self.counter.count_tokens(messages)
        return self.profile.messages(messages)

    def estimate(self, text: str) -> int:
        return self.profile.tokens(text)

    def scaled(self, factor: float) -> WindowSpec:
        """The same window with the estimate scaled by ``factor`` (after the model counted more than we did)."""
        return WindowSpec(self.provider_id, self.tokens, self.source, self.profile.scaled(factor), self.counter)


def resolve_window(provider_id: str, llm: object, configured: int | None = None) -> WindowSpec:
    """``provider_id``'s window: spec (``configured``), the adapter's own, the table, else ``DEFAULT_WINDOW``."""
    provider, _, model = provider_id.partition(":")
    row = known_model(provider, model)
    adapter = llm.context_window if isinstance(llm, HasContextWindow) else None
    tokens, source = _window(configured, adapter, row)
    counter = llm if isinstance(llm, CountsTokens) else None
    return WindowSpec(provider_id, tokens, source, row.profile if row else CONSERVATIVE, counter)


def _window(configured: int | None, adapter: int | None, row: KnownModel | None) -> tuple[int, WindowSource]:
    if configured is not None:
        return min(configured, adapter or configured), "spec"
    if adapter is not None:
        return adapter, "adapter"
    if row is not None:
        return row.window, "table"
    return DEFAULT_WINDOW, "default"
