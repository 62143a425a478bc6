"""Making a follow-up question self-contained before retrieval ("and what about its second chapter?").

Condensers live in a registry (``CONDENSERS``), chosen by ``RAG_CONDENSER``:

- ``terms``: deterministic and free — the salient words of the previous user turns (names, numbers, the rarer
  content words; the most recent turn first) are put in front of the question, minus those it already has.
- ``llm`` (default): the configured LLM rewrites the question as a standalone query, bounded by
  ``RAG_CONDENSE_TIMEOUT_S``; when the call fails, times out or returns something unusable (empty, too long, no
  word in common with the conversation), the ``terms`` result is used instead.

The first question of a conversation is used as it is.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rag_ray.errors import RagError
from rag_ray.generation.textutil import STOPWORDS, content_terms
from rag_ray.llm.base import ChatMessage, GenerationParams
from rag_ray.providers.manager import LLMManager
from rag_ray.registry import Registry

HISTORY_USER_TURNS = 3  # previous user turns a follow-up can refer to
MAX_TERMS = 10
MAX_QUERY_CHARS = 1000
_SURFACE_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# words that carry no topic even when rare: pronouns and the vocabulary of follow-up questions
_FOLLOW_UP_WORDS = frozenset({"its", "it", "them", "their", "his", "her", "him", "our", "your", "my", "one", "ones",
                              "else", "other", "another", "same", "more", "again", "next", "previous", "last",
                              "first", "second", "third", "wrote", "write", "written", "said", "say", "mean",
                              "means", "many", "much", "yes", "ok", "okay", "thanks", "thank", "now", "just"})

CONDENSE_SYSTEM = ("Rewrite the user's last question as one standalone search query that needs no conversation to "
                   "be understood: replace pronouns with what they refer to. Reply with the query only.")


@dataclass(frozen=True)
class Condensed:
    query: str  # what retrieval searches for
    method: str  # "none" (first question), "terms" or "llm"


class Condenser(Protocol):
    async def condense(self, history: Sequence[ChatMessage], question: str) -> Condensed: ...


CONDENSERS: Registry[Condenser] = Registry("conversation condenser")


class TermsCondenser:
    """Salient words of the previous user turns, put in front of the question."""

    def __init__(self, **_: object):
        pass

    async def condense(self, history: Sequence[ChatMessage], question: str) -> Condensed:
        return self.now(history, question)

    @staticmethod
    def now(history: Sequence[ChatMessage], question: str) -> Condensed:
        previous = [m.content for m in history if m.role == "user"][-HISTORY_USER_TURNS:]
        if not previous:
            return Condensed(question, "none")
        have = set(content_terms(question))
        terms: list[str] = []
        for text in reversed(previous):  # the latest turn is the likeliest referent
            for word in salient_words(text):
                if word.lower() not in have and word.lower() not in {t.lower() for t in terms}:
                    terms.append(word)
        if not terms:
            return Condensed(question, "terms")
        return Condensed(f"{' '.join(terms[:MAX_TERMS])} — {question}"[:MAX_QUERY_CHARS], "terms")


def salient_words(text: str) -> list[str]:
    """Surface words that name a topic: not stopwords, not follow-up vocabulary, not one Latin letter."""
    out = []
    for word in _SURFACE_WORD.findall(text):
        lowered = word.lower()
        if lowered in STOPWORDS or lowered in _FOLLOW_UP_WORDS or (len(word) < 3 and not word.isdigit()):
            continue
        out.append(word)
    return list(dict.fromkeys(out))


class LLMCondenser:
    """The LLM rewrites the question; the ``terms`` result stands in whenever the rewrite is not usable."""

    def __init__(self, *, llm: LLMManager, timeout_s: float = 20.0, max_tokens: int = 64, **_: object):
        self.llm = llm
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens

    async def condense(self, history: Sequence[ChatMessage], question: str) -> Condensed:
        fallback = TermsCondenser.now(history, question)
        if fallback.method == "none":
            return fallback
        try:
            async with asyncio.timeout(self.timeout_s):
                completion = await self.llm.generate(self._prompt(history, question),
                                                     GenerationParams(temperature=0.0, max_tokens=self.max_tokens))
        except (RagError, TimeoutError):
            return fallback
        rewrite = " ".join(completion.text.split()).strip("\"'")
        return Condensed(rewrite, "llm") if usable(rewrite, history, question) else fallback

    @staticmethod
    def _prompt(history: Sequence[ChatMessage], question: str) -> list[ChatMessage]:
        turns = [m for m in history if m.role in ("user", "assistant")][-2 * HISTORY_USER_TURNS:]
        lines = [f"{m.role}: {m.content[:500]}" for m in turns]
        return [ChatMessage("system", CONDENSE_SYSTEM),
                ChatMessage("user", "Conversation:\n" + "\n".join(lines) + f"\n\nLast question: {question}")]


def usable(rewrite: str, history: Sequence[ChatMessage], question: str) -> bool:
    if not rewrite or len(rewrite) > MAX_QUERY_CHARS:
        return False
    known = set(content_terms(question + " " + " ".join(m.content for m in history)))
    return bool(set(content_terms(rewrite)) & known)


CONDENSERS.register("terms")(TermsCondenser)
CONDENSERS.register("llm")(LLMCondenser)


def create_condenser(name: str, llm: LLMManager, timeout_s: float = 20.0) -> Condenser:
    return CONDENSERS.create(name, llm=llm, timeout_s=timeout_s)
