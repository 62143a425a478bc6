"""One batched ``generate`` over jobs: left padding, per-row limits and repetition controls.

Rows are left-padded to the longest prompt, so every row's answer starts at the same column — the padded
length — and the answer-only controls (repetition penalty with ``prompt_ignore_length``, ``AnswerNoRepeatNGram``)
look at exactly the row's own answer tokens. ``RowTracker`` is the stopping criterion: it hands each row's newest
token to its job, and a row is done at its end-of-sequence token, its own ``max_new``, its deadline, or when its
caller cancelled; done rows contribute nothing more and the call ends when every row is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor, StoppingCriteriaList

from rag_ray.llm.local.processors import AnswerNoRepeatNGram
from rag_ray.llm.local.scheduler import Decoding, Job


class MinNewTokens:
    """No end-of-sequence before a row has ``minimums[row]`` answer tokens (vLLM's ``min_tokens``)."""

    def __init__(self, minimums: Sequence[int], prompt_len: int, eos_ids: Collection[int]):
        self.minimums = torch.tensor(list(minimums))
        self.prompt_len = prompt_len
        self.eos_ids = torch.tensor(sorted(eos_ids))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        short = (input_ids.shape[1] - self.prompt_len) < self.minimums
        if bool(short.any()):
            scores = scores.clone()
            scores[short.nonzero()[:, :1], self.eos_ids[None, :]] = -float("inf")
        return scores


class RowTracker:
    """Stopping criterion: feeds each row's newest token to its job; a row is done when its job says so."""

    def __init__(self, jobs: Sequence[Job], eos_ids: Collection[int], clock: Callable[[], float] = time.monotonic):
        self.jobs = list(jobs)
        self.eos_ids = eos_ids
        self.clock = clock

    def __call__(self, input_ids: torch.Tensor, scores: Any, **_: Any) -> torch.Tensor:
        now = self.clock()
        newest = input_ids[:, -1].tolist()
        done = [job.accept(token, self.eos_ids, now) for job, token in zip(self.jobs, newest, strict=True)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every prompt right-aligned to the longest one."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids, mask


def logits_processors(decoding: Decoding, prompt_len: int, minimums: Sequence[int],
                      eos_ids: Collection[int]) -> LogitsProcessorList:
    processors: list[Any] = []
    if decoding.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty,
                                                           prompt_ignore_length=prompt_len))
    if decoding.no_repeat_ngram_size > 0:
        processors.append(AnswerNoRepeatNGram(decoding.no_repeat_ngram_size, prompt_len))
    if any(minimums):
        processors.append(MinNewTokens(minimums, prompt_len, eos_ids))
    return LogitsProcessorList(processors)


def generate_batch(model: Any, jobs: Sequence[Job], *, eos_ids: Collection[int], pad_id: int) -> None:
    """Run ``jobs`` (same ``Decoding``) as one ``model.generate`` call; the jobs receive the tokens."""
    decoding = jobs[0].decoding
    ids, mask = left_pad([j.prompt for j in jobs], pad_id)
    prompt_len = int(ids.shape[1])
    options: dict[str, Any] = {"max_new_tokens": max(j.max_new for j in jobs), "do_sample": decoding.sample,
                               "pad_token_id": pad_id,
                               "logits_processor": logits_processors(decoding, prompt_len,
                                                                     [j.min_new for j in jobs], eos_ids),
                               "stopping_criteria": StoppingCriteriaList([RowTracker(jobs, eos_ids)])}
    if decoding.sample:
        options.update(temperature=decoding.temperature, top_p=decoding.top_p)
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=mask, **options)
