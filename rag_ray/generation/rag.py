"""``RagPipeline``: the one RAG path behind ``/query`` (mode rag), ``/generate/rag`` and ``/v1`` ``model: "rag"``.

    retrieve → fit to the serving model's window → prompt → generate → mask → cite

- **retrieve**: ``RetrievalService.search`` under the caller's access filter, with one default ``k``
  (``retrieval.service.DEFAULT_K``) and one reranking default, so one question asked by one caller gets the same
  passages on every route.
- **fit**: the entry that will serve is resolved first (``LLMManager.route``: the one the strategy picks, or the
  one asked for), and the prompt is fitted to that entry's window (``generation.fitting``); lower-ranked passages
  are trimmed or dropped, ``max_tokens`` shrinks (reported) if even it does not fit. Only the user's own input being
  too long is an error (422 naming the field). If that entry fails, the next in the manager's order is tried, its
  prompt refitted to its window.
- **prompt**: the ``GenerationService``'s ``PromptEngineer``: strategy ``simple`` for ``answer``/``stream`` (the
  shortest skeleton), the request's for ``generate``.
- **generate**: a plain answer (``answer``), a stream (``stream``), or the scored single/ensemble answer
  (``generate``, through ``GenerationService.generate_rag``).
- **mask**: generated text goes through ``RetrievalService.answer_masker`` (PII, per the governance policy); streams
  are masked a sentence at a time (``StreamMasker``).
- **cite**: each ``[n]`` marker mapped to its passage's chunk, document and supporting span
  (``generation.citations.cite``; markers that point nowhere are removed and reported); every result says which
  passages were used and which dropped (``FittedPrompt.used_ids`` / ``dropped_ids``).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from rag_ray.generation.citations import Citation, CitedAnswer, Passage, cite, passages_for
from rag_ray.generation.context import ContextChunk
from rag_ray.generation.fitting import FittedPrompt, PromptFitter, Target, fitted_call
from rag_ray.generation.formats import tidy
from rag_ray.generation.prompts import PromptRequest
from rag_ray.generation.service import GenerationResponse, GenerationService, RagGenerateRequest
from rag_ray.llm.base import Completion, StreamChunk, close_stream
from rag_ray.providers.manager import LLMEntry, LLMManager, ManagedStream
from rag_ray.retrieval.service import DEFAULT_K, RetrievalService
from rag_ray.store.milvus import SearchStrategy
from rag_ray.types import Principal, SearchHit

DEFAULT_PROMPT_STRATEGY = "simple"  # the shortest skeleton: most of a small window goes to the passages
DEFAULT_RESPONSE_FORMAT = "markdown"


@dataclass(frozen=True)
class RetrievalOptions:
    """One retrieval call's knobs; None everywhere means the server's defaults."""

    k: int | None = None
    strategy: SearchStrategy | None = None
    filters: Any = None  # structured filters as the routes accept them (validated by ``store.filters``)
    rerank: bool | None = None


@dataclass(frozen=True)
class RagQuestion:
    """A question for ``answer``/``stream``. ``field`` names the request field holding it (for the 422 when the
    question alone is too long for the model); ``provider``/``model`` pin the LLM (a ``provider:model`` id is
    accepted as ``model``)."""

    query: str
    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)
    provider: str | None = None
    model: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    prompt_strategy: str = DEFAULT_PROMPT_STRATEGY
    response_format: str = DEFAULT_RESPONSE_FORMAT
    field: str = "query"


@dataclass(frozen=True)
class RagContext:
    """What the pipeline put in front of the model: every retrieved hit (rank order) and the fitted prompt."""

    hits: list[SearchHit]
    fitted: FittedPrompt

    def used(self) -> list[tuple[int, SearchHit]]:
        """(citation number, hit) for each passage in the prompt, [1] first."""
        by_id = {h.chunk_id: h for h in self.hits}
        return [(u.number, by_id[u.chunk.id]) for u in self.fitted.prompt.context.used if u.chunk.id in by_id]

    def passages(self) -> list[Passage]:
        return passages_for([(u.number, u.chunk.id) for u in self.fitted.prompt.context.used], self.hits)

    def cite(self, text: str, *, strip: bool = True) -> CitedAnswer:
        """``text`` without markers that point nowhere (``strip``), and each remaining marker's chunk and span."""
        return cite(text, self.passages(), strip=strip)


@dataclass(frozen=True)
class RagAnswer:
    answer: str  # masked for the caller
    context: RagContext
    completion: Completion
    citations: list[Citation]
    timings_ms: dict[str, float]
    dropped_markers: list[int] = field(default_factory=list)  # [n] that pointed at no passage (removed)


@dataclass(frozen=True)
class RagGenerated:
    """A scored ``/generate/rag`` answer, its citations (spans in ``response.response``) and the hits behind it."""

    response: GenerationResponse
    cited: CitedAnswer
    hits: list[SearchHit]


@dataclass
class RagStream:
    """An opened answer stream: its first chunk already arrived (failover and errors up to there are over).
    ``chunks`` are masked for the caller; close them (``aclose``) to stop generation."""

    context: RagContext
    entry: LLMEntry
    chunks: AsyncIterator[StreamChunk]


class RagPipeline:
    def __init__(self, *, retrieval: RetrievalService, generation: GenerationService, llm: LLMManager):
        self.retrieval = retrieval
        self.generation = generation
        self.llm = llm

    # ---- retrieve ----
    async def retrieve(self, principal: Principal, query: str,
                       options: RetrievalOptions | None = None) -> list[SearchHit]:
        """The one retrieval call of every RAG route (and of ``/query`` mode search)."""
        opts = options or RetrievalOptions()
        return await self.retrieval.search(principal, query, k=opts.k or DEFAULT_K, strategy=opts.strategy,
                                           filters=opts.filters, rerank=opts.rerank)

    # ---- the three ways to answer ----
    async def answer(self, principal: Principal, question: RagQuestion) -> RagAnswer:
        start = time.perf_counter()
        hits = await self.retrieve(principal, question.query, question.retrieval)
        retrieved = time.perf_counter()

        async def call(fitted: FittedPrompt, target: Target) -> Completion:
            params = fitted.params(question.temperature, question.stop)
            return await self.llm.generate(fitted.prompt.messages, params, provider=target.provider)

        fitted, completion = await fitted_call(self._fitter(question, hits), self._targets(question), call)
        context = RagContext(hits, fitted)
        cited = context.cite(tidy(self._mask(principal)(completion.text)))
        done = time.perf_counter()
        return RagAnswer(cited.text, context, completion, cited.citations,
                         {"retrieval": round((retrieved - start) * 1000, 3),
                          "generation": round((done - retrieved) * 1000, 3)}, cited.dropped)

    async def stream(self, principal: Principal, question: RagQuestion) -> RagStream:
        hits = await self.retrieve(principal, question.query, question.retrieval)

        async def call(fitted: FittedPrompt, target: Target) -> ManagedStream:
            params = fitted.params(question.temperature, question.stop)
            return await self.llm.open_stream(fitted.prompt.messages, params, provider=target.provider)

        fitted, opened = await fitted_call(self._fitter(question, hits), self._targets(question), call)
        masker = self.retrieval.answer_masker(principal)
        chunks = opened.chunks if masker is None else StreamMasker(masker).masked(opened.chunks)
        return RagStream(RagContext(hits, fitted), opened.entry, chunks)

    async def generate(self, principal: Principal, request: RagGenerateRequest) -> RagGenerated:
        """``/generate/rag``: the scored single or ensemble answer over the same retrieval, cited."""
        cfg = request.retrieval_config
        hits = await self.retrieve(principal, request.query, RetrievalOptions(
            k=cfg.k, strategy=cfg.search_strategy, filters=cfg.filters, rerank=cfg.enable_reranking))
        response = await self.generation.generate_rag(request, hits, mask=self.retrieval.answer_masker(principal))
        cited = cite(response.response, passages_for([(s.number, s.chunk_id) for s in response.context.sources],
                                                     hits))
        if cited.dropped:
            response = response.model_copy(update={"response": cited.text})
        return RagGenerated(response, cited, hits)

    # ---- steps ----
    def _fitter(self, question: RagQuestion, hits: list[SearchHit]) -> PromptFitter:
        request = PromptRequest(question.query, [ContextChunk.from_hit(h) for h in hits],
                                response_format=question.response_format)
        return PromptFitter(self.generation.prompts, request, question.prompt_strategy, None, question.max_tokens,
                            field=question.field)

    def _targets(self, question: RagQuestion) -> list[Target]:
        """The entry the manager would pick (or the one asked for) first, then its failover order."""
        provider, model = question.provider, question.model
        if provider is None and model is not None and ":" in model:
            provider, model = model, None
        return [Target(e.id, e.window()) for e in self.llm.route(provider=provider, model=model)]

    def _mask(self, principal: Principal) -> Callable[[str], str]:
        return self.retrieval.answer_masker(principal) or _unmasked


def _unmasked(text: str) -> str:
    return text


_BOUNDARY = re.compile(r"(?<=[.!?。？！])\s+|\n")


class StreamMasker:
    """Masks a streamed answer without ever sending a piece of a PII value: text is held back until a sentence end
    or a newline (emails, phone, card and ID numbers never contain one), then masked and released. A run longer than
    ``max_hold`` characters without one is released at its last space."""

    def __init__(self, mask: Callable[[str], str], *, max_hold: int = 600):
        self.mask = mask
        self.max_hold = max_hold
        self.pending = ""

    def feed(self, delta: str) -> str:
        self.pending += delta
        cut = self._cut()
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        return self.mask(ready) if ready else ""

    def flush(self) -> str:
        ready, self.pending = self.pending, ""
        return self.mask(ready) if ready else ""

    def _cut(self) -> int:
        ends = [m.end() for m in _BOUNDARY.finditer(self.pending)]
        if ends:
            return ends[-1]
        return self.pending.rfind(" ") + 1 if len(self.pending) > self.max_hold else 0

    def final(self, delta: str) -> str:
        self.pending += delta
        return self.flush()

    async def masked(self, chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in chunks:
                done = chunk.finish_reason is not None
                text = self.final(chunk.delta) if done else self.feed(chunk.delta)
                if text or done or chunk.usage is not None:
                    yield StreamChunk(delta=text, finish_reason=chunk.finish_reason, usage=chunk.usage)
            rest = self.flush()
            if rest:
                yield StreamChunk(delta=rest)
        finally:
            await close_stream(chunks)
