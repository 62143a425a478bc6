"""OpenAI-compatible routes, so any OpenAI client can use the server (``base_url=<server>/v1``, ``api_key=<token>``).

- ``POST /v1/chat/completions`` (``stream`` true or false). ``model`` is a configured ``provider:model`` id, a
  bare configured model id, or ``rag``: the RAG pipeline (``services.rag``, as ``/query`` and ``/generate/rag``)
  answers the last user message from the passages retrieved under the caller's access filter and fitted to the
  serving model's window; the text cites them (``Sources: [1] …``), the non-standard ``rag_sources`` field lists the
  passages in the prompt (``index`` = citation number) and ``rag_context`` says which were used and dropped and how
  the prompt was fitted (both on the response, or on the first chunk when streaming). A question that alone is too
  long for the model is a 422 naming ``messages``.
  Extension fields of ``model: rag`` (on the response; when streaming, on the chunk carrying ``finish_reason``, the
  last one with a choice), read with the official client as ``response.model_extra["citations"]``: ``citations`` (each
  ``[n]``: ``chunk_id``, ``doc_id``, ``source``, ``span`` {start, end} of ``quote`` in the chunk text,
  ``marker_offset`` in the message content — the same structure as ``/query``), ``dropped_markers``, ``answer_id``
  (``/answers/{id}``, feedback), ``conversation_id`` and ``condensed_query``. The earlier messages of the request are
  the conversation a follow-up question is made self-contained with; ``conversation_id`` (in the body: the client's
  ``extra_body``) uses a stored conversation instead (see ``routes.conversations``).
- ``POST /v1/embeddings`` (``encoding_format`` float or base64; ``model`` = the embedder's ``provider:model`` or
  bare model id).
- ``GET /v1/models`` and ``GET /v1/models/{id}``: the configured LLMs, ``rag``, and the embedder(s).

Responses are shaped like OpenAI's; streams are ``data: {chunk}`` frames ending with ``data: [DONE]`` (a failure
after the first token is one ``data: {"error": …}`` frame). Errors on these routes use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` (``param`` names the field) with the usual status codes.

Caps (422 naming the field in ``param``): ``messages`` 1..256 items, content ≤ 100,000 characters in total;
``max_tokens`` / ``max_completion_tokens`` 1..8192; ``temperature`` 0..2; ``top_p`` 0..1; ``n`` = 1; ``stop``
≤ 4 strings; embeddings ``input`` 1..512 strings of 1..32,000 characters (token arrays are not supported);
``dimensions`` 1..8192. Unknown fields are refused; an unknown ``model`` is a 422 naming ``model``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_ray.answers.turns import Concluded, conclude, rag_draft, stream_draft
from rag_ray.api.deps import PrincipalDep, ServicesDep
from rag_ray.api.errors import error_response, validation_problems
from rag_ray.api.routes.chat import MAX_MESSAGES, MAX_TOKENS, check_total_chars, open_stream, resolve_llm
from rag_ray.api.routes.conversations import TurnOut, conversation_id_field
from rag_ray.api.routes.embeddings import (
    MAX_DIMENSIONS,
    MAX_INPUTS,
    EmbeddingsDep,
    EncodingFormat,
    Text,
    VectorsResponse,
    as_list,
    encode_vector,
    usage,
)
from rag_ray.api.services import Services
from rag_ray.api.sse import event_stream, relay, sse_event
from rag_ray.conversations import Thread
from rag_ray.errors import InvalidInput, NotFound, RagError
from rag_ray.generation.citations import CitationsOut, CitedAnswer
from rag_ray.generation.rag import RagContext, RagQuestion
from rag_ray.generation.service import PassagesOut
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams, StreamChunk, Usage
from rag_ray.providers.embeddings import EmbedRequest
from rag_ray.types import Principal

RAG_MODEL = "rag"
CREATED = int(time.time())  # "created" of every model card: when this server started


# ------------------------------------------------------------------------------------------------ error shape
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error"}


def openai_error_body(exc: RagError, status: int = 500) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": exc.message, "type": kind, "param": exc.field, "code": exc.code}}


def openai_error(exc: RagError) -> JSONResponse:
    plain = error_response(exc)  # same status and headers (Retry-After, WWW-Authenticate) as the other routes
    headers = {k: v for k, v in plain.headers.items() if k in ("retry-after", "www-authenticate")}
    return JSONResponse(openai_error_body(exc, plain.status_code), status_code=plain.status_code, headers=headers)


def validation_error(exc: RequestValidationError) -> JSONResponse:
    first = validation_problems(exc)[0]
    return openai_error(InvalidInput(f"{first['field']}: {first['message']}", field=first["field"]))


class OpenAIRoute(APIRoute):
    """Errors of ``/v1`` routes (auth, validation, library errors) in OpenAI's shape; other routes keep ours."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                return validation_error(exc)
            except RagError as exc:
                return openai_error(exc)

        return handler


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
Finisher = Callable[[str, Usage | None], Awaitable[dict[str, Any]]]


# ------------------------------------------------------------------------------------------------ chat bodies
class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def to_chat(self) -> ChatMessage:
        return ChatMessage("system" if self.role == "developer" else self.role, self.text())


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI keeps adding stream options; unknown ones are harmless

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=192)
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Annotated[list[str], Field(max_length=4)] | None = None
    n: int = Field(1, ge=1, le=1)
    top_p: float | None = Field(None, ge=0.0, le=1.0)  # accepted for compatibility, not forwarded
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = None
    user: str | None = Field(None, max_length=256)
    conversation_id: str | None = conversation_id_field()  # model rag: a stored conversation

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return as_list(value)

    @field_validator("messages")
    @classmethod
    def _total_chars(cls, messages: list[OpenAIMessage]) -> list[OpenAIMessage]:
        check_total_chars([m.text() for m in messages])
        return messages

    def params(self) -> GenerationParams:
        defaults = GenerationParams()
        return GenerationParams(temperature=defaults.temperature if self.temperature is None else self.temperature,
                                max_tokens=self.max_completion_tokens or self.max_tokens or defaults.max_tokens,
                                stop=tuple(self.stop or ()))

    def chat_messages(self) -> list[ChatMessage]:
        return [m.to_chat() for m in self.messages]

    def rag_question(self, query: str) -> RagQuestion:
        """``query``: the last user message, made self-contained with the conversation."""
        params = self.params()
        return RagQuestion(query, temperature=params.temperature, max_tokens=params.max_tokens,
                           stop=params.stop, field="messages")

    def history(self) -> list[ChatMessage]:
        """The user and assistant messages before the last user message (an OpenAI client sends them all)."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "user" and m.text().strip())
        return [m.to_chat() for m in self.messages[:last] if m.role in ("user", "assistant")]

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user" and message.text().strip():
                return message.text()
        raise InvalidInput("the rag model needs a user message with the question", field="messages")


# -------------------------------------------------------------------------------------------- chat responses
FINISH_REASONS = {"stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length",
                  "max_tokens": "length", "content_filter": "content_filter"}


def finish_reason(reason: str | None) -> str:
    return FINISH_REASONS.get((reason or "stop").lower(), "stop")


@dataclass(frozen=True)
class CompletionMeta:
    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> CompletionMeta:
        return cls(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model)

    def chunk(self, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": [], "usage": usage.to_dict()}

    def completion(self, text: str, completion: Completion) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "logprobs": None, "finish_reason": finish_reason(completion.finish_reason)}],
                "usage": completion.usage.to_dict()}


@dataclass
class RagReply:
    """What ``model: rag`` adds to a completion: the passages in the prompt, as sources and as a citation block,
    and which passages were used and dropped."""

    context: RagContext

    def sources(self) -> list[dict[str, Any]]:
        return [{"index": number, **hit.to_dict()} for number, hit in self.context.used()]

    def passages(self) -> dict[str, Any]:
        return PassagesOut.of(self.context.fitted).model_dump()

    def annotate(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "rag_sources": self.sources(), "rag_context": self.passages()}

    def citations(self) -> str:
        used = self.context.used()
        if not used:
            return ""
        return "\n\nSources:\n" + "\n".join(f"[{number}] {hit.source_uri}" for number, hit in used)


@dataclass
class Plan:
    """One plain chat completion, resolved: what to send, and where."""

    messages: list[ChatMessage]
    provider: str | None
    model: str | None


def plan_chat(body: ChatCompletionRequest, services: Services) -> Plan:
    provider, model = resolve_llm(services.llm, None, body.model)
    return Plan(body.chat_messages(), provider, model)


# ------------------------------------------------------------------------------------------------ chat routes
@router.post("/chat/completions", summary="OpenAI chat completions (model: provider:model, a model id, or rag)")
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           principal: PrincipalDep,
                           services: ServicesDep) -> Any:
    if body.model == RAG_MODEL:
        return await _rag(body, request, principal, services)
    if body.conversation_id is not None:
        raise InvalidInput("conversation_id is for model rag (other models get the history in messages)",
                           field="conversation_id")
    plan = plan_chat(body, services)
    if body.stream:
        return await _stream(body, plan, request, services)
    completion = await services.llm.generate(plan.messages, body.params(), provider=plan.provider, model=plan.model)
    return CompletionMeta.new(f"{completion.provider}:{completion.model}").completion(completion.text, completion)


async def _rag(body: ChatCompletionRequest, request: Request, principal: Principal, services: Services) -> Any:
    meta = CompletionMeta.new(RAG_MODEL)
    thread = await services.conversations.begin(principal, body.conversation_id, body.last_user_text(),
                                                history=body.history())
    if body.stream:
        started = time.perf_counter()
        opened = await services.rag.stream(principal, body.rag_question(thread.query))

        async def finish(text: str, usage: Usage | None) -> dict[str, Any]:
            cited = opened.context.cite(text, strip=False)  # already sent: report, do not rewrite
            timings = {"total": round((time.perf_counter() - started) * 1000, 3)}
            done = await conclude(services.conversations, services.answers, principal, thread, stream_draft(
                "v1_chat", thread, opened.context, text, cited.citations, opened.entry.id, usage, timings))
            return rag_extension(cited, thread, done)

        return event_stream(_frames(request, meta, None, opened.chunks, RagReply(opened.context),
                                    _include_usage(body), finish))
    answer = await services.rag.answer(principal, body.rag_question(thread.query))
    done = await conclude(services.conversations, services.answers, principal, thread,
                          rag_draft("v1_chat", thread, answer))
    rag = RagReply(answer.context)
    cited = CitedAnswer(answer.answer, answer.citations, answer.dropped_markers)
    return {**rag.annotate(meta.completion(answer.answer + rag.citations(), answer.completion)),
            **rag_extension(cited, thread, done)}


def rag_extension(cited: CitedAnswer, thread: Thread, done: Concluded) -> dict[str, Any]:
    """The documented extension fields of a ``model: rag`` answer."""
    return {**CitationsOut.of(cited).model_dump(), **TurnOut.of(thread, done).model_dump()}


def _include_usage(body: ChatCompletionRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _stream(body: ChatCompletionRequest, plan: Plan, request: Request, services: Services) -> Response:
    first, stream, entry = await open_stream(services, plan.messages, body.params(), provider=plan.provider,
                                             model=plan.model, strategy=None)
    meta = CompletionMeta.new(entry.id if entry else body.model)
    return event_stream(_frames(request, meta, first, stream, None, _include_usage(body)))


async def _frames(request: Request, meta: CompletionMeta, first: StreamChunk | None,
                  stream: AsyncIterator[StreamChunk], rag: RagReply | None, include_usage: bool,
                  finish: Finisher | None = None) -> AsyncIterator[str]:
    """``finish(text, usage)``: called once the answer is complete; its fields go in a last chunk."""
    head = meta.chunk({"role": "assistant", "content": ""})
    yield sse_event(rag.annotate(head) if rag is not None else head)
    final = StreamChunk(finish_reason="stop")
    text: list[str] = []
    try:
        async for chunk in relay(request, first, stream):
            if chunk.delta:
                text.append(chunk.delta)
                yield sse_event(meta.chunk({"content": chunk.delta}))
            if chunk.finish_reason not in (None, "error"):
                final = chunk
    except RagError as exc:
        yield sse_event(openai_error_body(exc, error_response(exc).status_code))
        return
    if await request.is_disconnected():
        return
    extension = await finish("".join(text), final.usage) if finish is not None else None
    for frame in _closing_frames(meta, final, rag, include_usage, extension):
        yield frame


def _closing_frames(meta: CompletionMeta, final: StreamChunk, rag: RagReply | None,
                    include_usage: bool, extension: dict[str, Any] | None) -> list[str]:
    citations = rag.citations() if rag else ""
    frames = [sse_event(meta.chunk({"content": citations}))] if citations else []
    # extension fields ride on the finishing chunk: it has a choice, so clients reading choices[0] keep working
    frames.append(sse_event({**meta.chunk({}, finish_reason(final.finish_reason)), **(extension or {})}))
    if include_usage:
        frames.append(sse_event(meta.usage_chunk(final.usage or Usage())))
    frames.append(sse_event("[DONE]"))
    return frames


# ------------------------------------------------------------------------------------------------ embeddings
class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: list[Text] = Field(min_length=1, max_length=MAX_INPUTS)
    model: str = Field(min_length=1, max_length=192)
    dimensions: int | None = Field(None, ge=1, le=MAX_DIMENSIONS)
    encoding_format: EncodingFormat = "float"
    user: str | None = Field(None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _single(cls, value: Any) -> Any:
        return as_list(value)

    def to_request(self) -> EmbedRequest:
        return EmbedRequest(self.input, model=self.model, dimensions=self.dimensions)


@router.post("/embeddings", summary="OpenAI embeddings", response_class=VectorsResponse)
async def embeddings(body: EmbeddingRequest, service: EmbeddingsDep,
                     _: PrincipalDep) -> VectorsResponse:
    result = await service.embed(body.to_request())
    data = [{"object": "embedding", "index": i, "embedding": encode_vector(row, body.encoding_format)}
            for i, row in enumerate(result.vectors)]
    return VectorsResponse({"object": "list", "data": data, "model": body.model, "usage": usage(result)})


# ---------------------------------------------------------------------------------------------------- models
def model_card(model_id: str, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": owner}


def model_cards(services: Services) -> list[dict[str, Any]]:
    llms: Sequence[dict[str, Any]] = services.llm.status()["entries"]
    cards = [model_card(e["id"], e["provider"]) for e in llms]
    cards.append(model_card(RAG_MODEL, "rag-ray"))
    cards.extend(model_card(m.id, m.provider) for m in services.embeddings.models())
    return cards


@router.get("/models", summary="OpenAI model list: configured LLMs, rag, embedders")
async def list_models(services: ServicesDep,
                      _: PrincipalDep) -> dict[str, Any]:
    return {"object": "list", "data": model_cards(services)}


@router.get("/models/{model_id:path}", summary="One model card")
async def get_model(model_id: str, services: ServicesDep,
                    _: PrincipalDep) -> dict[str, Any]:
    for card in model_cards(services):
        if card["id"] == model_id:
            return card
    raise NotFound(f"model {model_id!r} does not exist", field="model")
