"""``GET /conversations`` (the caller's, latest first), ``GET /conversations/{id}`` (with its messages) and
``DELETE /conversations/{id}``. Another user's conversation is a 404, as is an unknown one.

Conversations are started and continued through the RAG and chat routes (``/query`` mode rag, ``/generate/rag``,
``/chat``, ``/v1/chat/completions``): ``"conversation_id": "new"`` starts one (its id comes back in the response),
an id continues it; the field left out means no memory. Follow-up questions are made self-contained before
retrieval (``RAG_CONDENSER``) and the query retrieval used comes back as ``condensed_query``. A conversation holds
at most ``RAG_CONVERSATION_MAX_TURNS`` messages (a turn past it is a 413 naming ``conversation_id``) and is deleted
``RAG_CONVERSATION_RETENTION_DAYS`` after its last turn.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from rag_ray.answers.turns import Concluded
from rag_ray.api.deps import PrincipalDep, ServicesDep
from rag_ray.conversations import Conversation, Thread

router = APIRouter(tags=["conversations"])

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
CONVERSATION_ID_HELP = ('"new" starts a conversation; an id continues one of yours; left out: no memory '
                        "(see GET /conversations)")


def conversation_id_field() -> Any:
    """The ``conversation_id`` request field of every route that can continue a conversation."""
    return Field(None, min_length=1, max_length=64, pattern=CONVERSATION_ID_PATTERN, description=CONVERSATION_ID_HELP)


class TurnOut(BaseModel):
    """What every answering route adds: the answer's record (for ``/answers/{id}`` and feedback), the conversation
    it joined, and the self-contained query retrieval used when the question was a follow-up."""

    answer_id: str | None = None
    conversation_id: str | None = None
    condensed_query: str | None = None

    @classmethod
    def of(cls, thread: Thread, done: Concluded) -> TurnOut:
        condensed = thread.query if thread.condensed.method != "none" else None
        return cls(answer_id=done.answer_id, conversation_id=done.conversation_id, condensed_query=condensed)


class MessageOut(BaseModel):
    role: str
    content: str
    condensed_query: str | None = None
    answer_id: str | None = None
    created_at: datetime | None = None


class ConversationOut(BaseModel):
    conversation_id: str
    title: str
    turn_count: int
    created_at: datetime
    updated_at: datetime
    messages: list[MessageOut] | None = None  # on GET /conversations/{id}

    @classmethod
    def of(cls, c: Conversation, *, with_messages: bool = False) -> ConversationOut:
        messages = [MessageOut(role=t.role, content=t.content, condensed_query=t.condensed_query,
                               answer_id=t.answer_id, created_at=t.created_at) for t in c.turns]
        return cls(conversation_id=c.conversation_id, title=c.title, turn_count=c.turn_count,
                   created_at=c.created_at, updated_at=c.updated_at, messages=messages if with_messages else None)


ConversationPath = Path(min_length=1, max_length=64, pattern=CONVERSATION_ID_PATTERN)


@router.get("/conversations", summary="The caller's conversations, most recently active first")
async def list_conversations(principal: PrincipalDep, services: ServicesDep,
                             limit: int = Query(50, ge=1, le=500),
                             offset: int = Query(0, ge=0, le=1_000_000)) -> list[ConversationOut]:
    found = await services.conversations.list(principal, limit=limit, offset=offset)
    return [ConversationOut.of(c) for c in found]


@router.get("/conversations/{conversation_id}", summary="One of the caller's conversations, with its messages")
async def get_conversation(principal: PrincipalDep, services: ServicesDep,
                           conversation_id: str = ConversationPath) -> ConversationOut:
    return ConversationOut.of(await services.conversations.get(principal, conversation_id), with_messages=True)


@router.delete("/conversations/{conversation_id}", status_code=204, summary="Delete one of the caller's conversations")
async def delete_conversation(principal: PrincipalDep, services: ServicesDep,
                              conversation_id: str = ConversationPath) -> Response:
    await services.conversations.delete(principal, conversation_id)
    return Response(status_code=204)
