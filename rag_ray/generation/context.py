"""Retrieved context → a numbered, budgeted block of text for the prompt.

Two steps, kept apart so each is testable:

1. ``fit_to_budget`` keeps the best chunks that fit a token budget: duplicates are removed, chunks are taken in
   descending score order, the first one that no longer fits is truncated when enough room is left, and the
   rest are dropped (lowest scores go first). Tokens are *estimated*: by default with ``textutil.estimate_tokens``
   (~4 chars/token Latin, ~1.5 chars/token Hangul); pass the target model's estimate (``WindowSpec.estimate``)
   to budget for its tokenizer.
2. An injection mode (registry ``INJECTION_MODES``) renders the kept chunks. Every kept chunk gets a stable
   number ``[n]`` (its rank) that the answer cites; ``FittedContext.used`` maps the numbers back to chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_ray.errors import InvalidInput
from rag_ray.generation.textutil import estimate_tokens, truncate_to_tokens
from rag_ray.types import SearchHit

# Each chunk costs its text plus a header line ("[3] Source: ...").
CHUNK_OVERHEAD_TOKENS = 12
MIN_TRUNCATED_TOKENS = 48


@dataclass(frozen=True)
class ContextChunk:
    id: str
    text: str
    score: float = 0.0
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_hit(cls, hit: SearchHit) -> ContextChunk:
        title = str(hit.metadata.get("title") or "")
        return cls(id=hit.chunk_id, text=hit.text, score=float(hit.score), source=title or hit.source_uri,
                   metadata=dict(hit.metadata))


@dataclass(frozen=True)
class UsedChunk:
    """A chunk as it appears in the prompt: its citation number and the (possibly truncated) text."""

    number: int
    chunk: ContextChunk
    text: str
    truncated: bool = False


@dataclass
class FittedContext:
    used: list[UsedChunk]
    dropped_ids: list[str]
    original_tokens: int
    final_tokens: int
    budget_tokens: int

    @property
    def compression_applied(self) -> bool:
        return bool(self.dropped_ids) or any(u.truncated for u in self.used)

    def by_number(self) -> dict[int, UsedChunk]:
        return {u.number: u for u in self.used}

    def metadata(self) -> dict[str, Any]:
        return {"contexts_used": len(self.used), "contexts_dropped": len(self.dropped_ids),
                "truncated": [u.chunk.id for u in self.used if u.truncated],
                "original_tokens": self.original_tokens, "final_tokens": self.final_tokens,
                "budget_tokens": self.budget_tokens, "compression_applied": self.compression_applied}


Estimator = Callable[[str], int]


def chunk_cost(text: str, estimate: Estimator = estimate_tokens) -> int:
    return estimate(text) + CHUNK_OVERHEAD_TOKENS


def _dedupe_ranked(chunks: Sequence[ContextChunk]) -> tuple[list[ContextChunk], list[str]]:
    seen: set[str] = set()
    kept: list[ContextChunk] = []
    duplicates: list[str] = []
    for chunk in sorted(chunks, key=lambda c: c.score, reverse=True):
        key = " ".join(chunk.text.split()).lower()
        if not key or key in seen:
            duplicates.append(chunk.id)
            continue
        seen.add(key)
        kept.append(chunk)
    return kept, duplicates


def fit_to_budget(chunks: Sequence[ContextChunk], budget_tokens: int, *,
                  estimate: Estimator = estimate_tokens) -> FittedContext:
    """Best-first packing of chunks into ``budget_tokens`` (counted by ``estimate``); see the module docstring."""
    ranked, dropped = _dedupe_ranked(chunks)
    used: list[UsedChunk] = []
    remaining = max(0, budget_tokens)
    for chunk in ranked:
        cost = chunk_cost(chunk.text, estimate)
        if cost <= remaining:
            used.append(UsedChunk(len(used) + 1, chunk, chunk.text))
            remaining -= cost
        elif remaining - CHUNK_OVERHEAD_TOKENS >= MIN_TRUNCATED_TOKENS:
            text = truncate_to_tokens(chunk.text, remaining - CHUNK_OVERHEAD_TOKENS, estimate=estimate)
            used.append(UsedChunk(len(used) + 1, chunk, text, truncated=True))
            remaining -= chunk_cost(text, estimate)
        else:
            dropped.append(chunk.id)
    return FittedContext(used=used, dropped_ids=dropped,
                         original_tokens=sum(chunk_cost(c.text, estimate) for c in chunks),
                         final_tokens=sum(chunk_cost(u.text, estimate) for u in used), budget_tokens=budget_tokens)


# ---- injection modes -------------------------------------------------------------------------------------
Injector = Callable[[Sequence[UsedChunk]], str]
INJECTION_MODES: dict[str, Injector] = {}


def injection_mode(name: str) -> Callable[[Injector], Injector]:
    def decorator(fn: Injector) -> Injector:
        INJECTION_MODES[name] = fn
        return fn

    return decorator


def _label(u: UsedChunk) -> str:
    return f"[{u.number}]"


@injection_mode("prepend")
def inject_prepend(used: Sequence[UsedChunk]) -> str:
    """Numbered passages, one after the other, best first."""
    return "\n\n".join(f"{_label(u)} {u.text}" for u in used)


@injection_mode("structured_sections")
def inject_sections(used: Sequence[UsedChunk]) -> str:
    """One section per passage with its source and relevance, for prompts that reason about provenance."""
    parts = []
    for u in used:
        source = f" — {u.chunk.source}" if u.chunk.source else ""
        parts.append(f"### Source {_label(u)}{source} (relevance {u.chunk.score:.2f})\n{u.text}")
    return "\n\n".join(parts)


def interleave_order(n: int) -> list[int]:
    """Ranks 0..n-1 placed best at both ends (1, 3, 5, … 6, 4, 2) — models attend least to the middle."""
    front = list(range(0, n, 2))
    back = list(range(1, n, 2))
    return front + back[::-1]


@injection_mode("interleaved")
def inject_interleaved(used: Sequence[UsedChunk]) -> str:
    """Like ``prepend`` but ordered so the strongest passages sit at the start and the end."""
    ordered = [used[i] for i in interleave_order(len(used))]
    return "\n\n".join(f"{_label(u)} {u.text}" for u in ordered)


@injection_mode("adaptive")
def inject_adaptive(used: Sequence[UsedChunk]) -> str:
    """Few passages → plain; many (≥ 6) → interleaved; several sources → sections."""
    if len(used) <= 2:
        return inject_prepend(used)
    if len(used) >= 6:
        return inject_interleaved(used)
    if len({u.chunk.source for u in used if u.chunk.source}) > 1:
        return inject_sections(used)
    return inject_prepend(used)


def render_context(used: Sequence[UsedChunk], mode: str) -> str:
    try:
        injector = INJECTION_MODES[mode]
    except KeyError:
        raise InvalidInput(f"unknown context injection mode {mode!r} (known: {', '.join(sorted(INJECTION_MODES))})",
                           field="context_injection") from None
    return injector(used) if used else ""
