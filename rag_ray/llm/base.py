"""The LLM interface: ``generate`` and ``stream``, both async."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from rag_ray.registry import Registry

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.7
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    timeout_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass
class Completion:
    text: str
    provider: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    latency_ms: float = 0.0
    cost_usd: float = 0.0


@dataclass
class StreamChunk:
    """One piece of a streamed answer; the last one carries ``finish_reason`` and usage."""

    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


@runtime_checkable
class LLM(Protocol):
    provider: str
    model: str

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion: ...

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]: ...


@runtime_checkable
class CountsGenerations(Protocol):
    """A backend that counts its running generations itself (the local model, the fake): a cancelled call leaves the
    count only once the backend has really stopped it."""

    @property
    def active_generations(self) -> int: ...


LLMS: Registry[LLM] = Registry("LLM provider")


async def close_stream(stream: AsyncIterator[Any]) -> None:
    """Close a stream left early, so its ``finally`` blocks (a provider's connection, a settled budget) run now rather
    than at garbage collection. An error while closing is dropped: it must not mask how the stream ended."""
    if isinstance(stream, AsyncGenerator):
        with contextlib.suppress(Exception):
            await stream.aclose()


def as_messages(prompt: str, system: str | None = None) -> list[ChatMessage]:
    messages = [ChatMessage("system", system)] if system else []
    messages.append(ChatMessage("user", prompt))
    return messages
