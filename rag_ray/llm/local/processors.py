"""Logits processors that look at the answer only (importing this module does not import torch)."""

from __future__ import annotations

from typing import Any


class AnswerNoRepeatNGram:
    """transformers' ``NoRepeatNGramLogitsProcessor`` over the generated tokens only: the stock one also bans every
    n-gram of the prompt, which would forbid quoting the retrieved context. ``prompt_len`` is the padded length of
    a left-padded batch (the column where every row's answer starts), so each row sees exactly its own answer."""

    def __init__(self, ngram_size: int, prompt_len: int):
        from transformers import NoRepeatNGramLogitsProcessor

        self.inner = NoRepeatNGramLogitsProcessor(ngram_size)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return self.inner(input_ids[:, self.prompt_len:], scores)
