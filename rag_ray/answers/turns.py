"""One answered turn, from the pipeline's result to what is stored: the answer record (``AnswerDraft``, built here
for each kind of result) and, when the request named a conversation, the question and answer appended to it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag_ray.answers.service import AnswerService
from rag_ray.answers.store import AnswerDraft, PassageUsed
from rag_ray.conversations.service import ConversationService, Thread
from rag_ray.generation.citations import Citation
from rag_ray.generation.rag import RagAnswer, RagContext, RagGenerated
from rag_ray.llm.base import Completion, Usage
from rag_ray.types import Principal


@dataclass(frozen=True)
class Concluded:
    answer_id: str
    conversation_id: str | None  # None: the request named no conversation


async def conclude(conversations: ConversationService, answers: AnswerService, principal: Principal,
                   thread: Thread, draft: AnswerDraft) -> Concluded:
    """Record the answer, then append the turn to the conversation (after the answer exists: a failed request
    stores nothing)."""
    answer_id = await answers.record(principal, draft)
    conversation_id = await conversations.finish(principal, thread, draft.answer, answer_id)
    await answers.attach(answer_id, conversation_id)
    return Concluded(answer_id, conversation_id)


def rag_draft(route: str, thread: Thread, result: RagAnswer) -> AnswerDraft:
    c = result.completion
    return _draft(route, thread, result.answer, f"{c.provider}:{c.model}", result.context, result.citations,
                  timings_ms=result.timings_ms, usage=c.usage)


def stream_draft(route: str, thread: Thread, context: RagContext, text: str, citations: Sequence[Citation],
                 entry_id: str, usage: Usage | None, timings_ms: dict[str, float]) -> AnswerDraft:
    return _draft(route, thread, text, entry_id, context, citations, timings_ms=timings_ms, usage=usage)


def generated_draft(route: str, thread: Thread, result: RagGenerated) -> AnswerDraft:
    r = result.response
    by_id = {h.chunk_id: h for h in result.hits}
    passages = [PassageUsed(s.number, s.chunk_id, by_id[s.chunk_id].doc_id if s.chunk_id in by_id else "",
                            s.source, round(s.score, 6)) for s in r.context.sources]
    return AnswerDraft(route=route, question=thread.question, answer=r.response, provider=f"{r.provider}:{r.model}",
                       condensed_query=_condensed(thread), passages=passages, citations=list(result.cited.citations),
                       scores={name: score.score for name, score in r.quality.scores.items()},
                       overall_score=r.quality.overall, timings_ms=dict(r.timings), usage=dict(r.usage))


def chat_draft(route: str, thread: Thread, completion: Completion) -> AnswerDraft:
    return AnswerDraft(route=route, question=thread.question, answer=completion.text,
                       provider=f"{completion.provider}:{completion.model}",
                       timings_ms={"total": round(completion.latency_ms, 3)}, usage=completion.usage.to_dict())


def _draft(route: str, thread: Thread, text: str, entry_id: str, context: RagContext,
           citations: Sequence[Citation], *, timings_ms: dict[str, float], usage: Usage | None) -> AnswerDraft:
    passages = [PassageUsed(number, hit.chunk_id, hit.doc_id, hit.source_uri, round(float(hit.score), 6))
                for number, hit in context.used()]
    return AnswerDraft(route=route, question=thread.question, answer=text, provider=entry_id,
                       condensed_query=_condensed(thread), passages=passages, citations=list(citations),
                       timings_ms=dict(timings_ms), usage=(usage or Usage()).to_dict())


def _condensed(thread: Thread) -> str | None:
    return thread.query if thread.condensed.method != "none" else None
