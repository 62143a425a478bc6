"""``POST /chat`` and ``POST /chat/stream``: chat with the configured LLMs through the manager.

Body (the seed's): ``{messages: [{role, content}], model?, provider?, temperature?, max_tokens?, load_balancing?,
stream?}``. ``model`` is a configured model (``gpt-4o-mini``) or a full ``provider:model`` id; ``provider`` narrows
to one provider; ``load_balancing`` picks a strategy (round_robin, random, least_loaded, latency_based,
health_based, cost_optimized; ``weighted`` = random).

Caps (422 naming the field): ``messages`` 1..256 items, content ≤ 100,000 characters in total; ``max_tokens``
1..8192; ``temperature`` 0..2; ``model`` ≤ 128 and ``provider`` ≤ 64 characters; unknown fields are refused.
An unknown provider or model is a 422 naming ``provider`` / ``model``.

``/chat/stream`` answers ``text/event-stream``: ``event: token`` frames ``{"delta": ...}``, then one
``event: done`` with provider, model, usage, latency_ms, cost_usd and finish_reason. Failures before the first
token fail over and, if nothing can answer, are a normal HTTP error; a failure after it is one
``event: error`` frame ``{error, message}`` and the stream ends. A client that disconnects stops generation.

Every answer is recorded (``answer_id`` in the response or the ``done`` event: ``GET /answers/{id}``, feedback).
``conversation_id`` (``"new"`` or one of the caller's; see ``routes.conversations``) puts the conversation's latest
messages (as many as fit the character cap) before ``messages`` and stores the last user message and the answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_ray.answers.turns import chat_draft, conclude
from rag_ray.api.deps import PrincipalDep, ServicesDep, current_principal
from rag_ray.api.middleware import request_timeout_field, use_request_timeout
from rag_ray.api.routes.conversations import conversation_id_field
from rag_ray.api.services import Services
from rag_ray.api.sse import event_stream, prime, relay, sse_event
from rag_ray.conversations import Thread
from rag_ray.conversations.service import with_history
from rag_ray.errors import InvalidInput, RagError
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams, StreamChunk, Usage
from rag_ray.providers.manager import LLMEntry, LLMManager
from rag_ray.providers.strategies import STRATEGIES
from rag_ray.types import Principal

router = APIRouter(tags=["chat"], dependencies=[Depends(current_principal)])

MAX_MESSAGES = 256
MAX_TOTAL_CHARS = 100_000
MAX_TOKENS = 8192
STRATEGY_ALIASES = {"weighted": "random", "weighted_random": "random"}


def check_total_chars(contents: list[str]) -> None:
    total = sum(len(c) for c in contents)
    if total > MAX_TOTAL_CHARS:
        raise ValueError(f"message content totals {total} characters (at most {MAX_TOTAL_CHARS})")


def check_strategy(name: str | None) -> str | None:
    if name is None:
        return None
    name = STRATEGY_ALIASES.get(name, name)
    if name not in STRATEGIES.names():
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES.names())})")
    return name


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_TOTAL_CHARS)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"messages": [{"role": "user", "content": "머신러닝이 무엇인가요?"}], "model": "gpt-4", "temperature": 0.7,
         "max_tokens": 1000}]})

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    model: str | None = Field(None, min_length=1, max_length=128)
    provider: str | None = Field(None, min_length=1, max_length=64)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(512, ge=1, le=MAX_TOKENS)
    load_balancing: str | None = Field(None, max_length=64)
    stream: bool = False
    timeout_s: float | None = request_timeout_field("RAG_CHAT_TIMEOUT_S")
    conversation_id: str | None = conversation_id_field()

    @field_validator("messages")
    @classmethod
    def _total_chars(cls, messages: list[Message]) -> list[Message]:
        check_total_chars([m.content for m in messages])
        return messages

    @field_validator("load_balancing")
    @classmethod
    def _strategy(cls, name: str | None) -> str | None:
        return check_strategy(name)

    def chat_messages(self) -> list[ChatMessage]:
        return [ChatMessage(m.role, m.content) for m in self.messages]

    def question(self) -> str:
        """What the answer record and the conversation keep as the question: the last user message."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), self.messages[-1].content)

    def params(self) -> GenerationParams:
        return GenerationParams(temperature=self.temperature, max_tokens=self.max_tokens)


async def begin_turn(body: ChatRequest, principal: Principal, services: Services) -> tuple[Thread, list[ChatMessage]]:
    """The caller's conversation (404 unknown/foreign, 413 full) and the messages to send: its latest history (as
    much as fits ``MAX_TOTAL_CHARS``) before the request's own."""
    thread = await services.conversations.begin(principal, body.conversation_id, body.question(), condense=False)
    return thread, with_history(thread.history, body.chat_messages(), MAX_TOTAL_CHARS)


# ------------------------------------------------------------------------------------------- routing helpers
def resolve_llm(manager: LLMManager, provider: str | None, model: str | None) -> tuple[str | None, str | None]:
    """(provider, model) for the manager, or a 422 naming the field that matches no configured entry.
    A full ``provider:model`` id in ``model`` becomes the provider filter (ids may hold more colons)."""
    entries = manager.entries
    if provider is not None and not any(provider in (e.provider, e.id) for e in entries):
        raise InvalidInput(f"unknown provider {provider!r} (configured: {_ids(entries)})", field="provider")
    if model is None:
        return provider, None
    allowed = [e for e in entries if provider in (None, e.provider, e.id)]
    for entry in allowed:
        if entry.id == model:
            return entry.id, None
    if any(e.model == model for e in allowed):
        return provider, model
    raise InvalidInput(f"unknown model {model!r} (configured: {_ids(entries)})", field="model")


def _ids(entries: list[LLMEntry]) -> str:
    return ", ".join(e.id for e in entries)


def describe(entry: LLMEntry | None, usage: Usage | None) -> dict[str, Any]:
    return {"provider": entry.provider if entry else None, "model": entry.model if entry else None,
            "cost_usd": entry.price.cost(usage) if entry and usage else 0.0}


async def open_stream(services: Services, messages: list[ChatMessage], params: GenerationParams, *,
                      provider: str | None, model: str | None, strategy: str | None
                      ) -> tuple[StreamChunk | None, AsyncIterator[StreamChunk], LLMEntry | None]:
    """Start a managed stream and pull its first chunk, so failover and errors up to there keep HTTP status."""
    opened = await services.llm.open_stream(messages, params, strategy=strategy, provider=provider, model=model)
    first = await prime(opened.chunks)
    return first, opened.chunks, opened.entry


# ---------------------------------------------------------------------------------------------------- routes
@router.post("/chat", summary="Chat with the configured LLMs (manager: strategies, retries, fallback)")
async def chat(body: ChatRequest, request: Request, principal: PrincipalDep, services: ServicesDep) -> Any:
    use_request_timeout(body.timeout_s, services.settings.max_request_timeout_s)
    if body.stream:
        return await chat_stream(body, request, principal, services)
    provider, model = resolve_llm(services.llm, body.provider, body.model)
    thread, messages = await begin_turn(body, principal, services)
    completion = await services.llm.generate(messages, body.params(), strategy=body.load_balancing,
                                             provider=provider, model=model)
    done = await conclude(services.conversations, services.answers, principal, thread,
                          chat_draft("chat", thread, completion))
    return {"answer": completion.text, "provider": completion.provider, "model": completion.model,
            "usage": completion.usage.to_dict(), "latency_ms": round(completion.latency_ms, 3),
            "cost_usd": completion.cost_usd, "finish_reason": completion.finish_reason,
            "answer_id": done.answer_id, "conversation_id": done.conversation_id}


@router.post("/chat/stream", summary="Chat, streamed as server-sent events (token…, done | error)")
async def chat_stream(body: ChatRequest, request: Request, principal: PrincipalDep,
                      services: ServicesDep) -> StreamingResponse:
    use_request_timeout(body.timeout_s, services.settings.max_request_timeout_s)
    started = time.perf_counter()
    provider, model = resolve_llm(services.llm, body.provider, body.model)
    thread, messages = await begin_turn(body, principal, services)
    first, stream, entry = await open_stream(services, messages, body.params(), provider=provider,
                                             model=model, strategy=body.load_balancing)

    async def finish(text: str, usage: Usage | None) -> dict[str, Any]:
        completion = Completion(text, entry.provider if entry else "", entry.model if entry else "",
                                usage or Usage(), latency_ms=(time.perf_counter() - started) * 1000)
        done = await conclude(services.conversations, services.answers, principal, thread,
                              chat_draft("chat", thread, completion))
        return {"answer_id": done.answer_id, "conversation_id": done.conversation_id}

    return event_stream(_chat_frames(request, first, stream, entry, started, finish))


async def _chat_frames(request: Request, first: StreamChunk | None, stream: AsyncIterator[StreamChunk],
                       entry: LLMEntry | None, started: float,
                       finish: Callable[[str, Usage | None], Awaitable[dict[str, Any]]]) -> AsyncIterator[str]:
    final = StreamChunk(finish_reason="stop")
    text: list[str] = []
    try:
        async for chunk in relay(request, first, stream):
            if chunk.delta:
                text.append(chunk.delta)
                yield sse_event({"delta": chunk.delta}, "token")
            if chunk.finish_reason not in (None, "error"):
                final = chunk
    except RagError as exc:
        yield sse_event({"error": exc.code, "message": exc.message}, "error")
        return
    if await request.is_disconnected():
        return
    done = {**describe(entry, final.usage), "usage": (final.usage or Usage()).to_dict(),
            "latency_ms": round((time.perf_counter() - started) * 1000, 3), "finish_reason": final.finish_reason}
    yield sse_event({**done, **await finish("".join(text), final.usage)}, "done")
