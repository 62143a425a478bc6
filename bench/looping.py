"""How often the default local model loops, with the old decoding (no repetition controls) and the current defaults.

20 fixed SciFact claims (the first 20 of the test split with a judged document), each asked as a RAG question over
its judged document(s) with the server's own prompt (``PromptEngineer``, strategy ``simple``, the pipeline's greedy
decoding and 256 new tokens). An answer *loops* when some 8 consecutive words (lower-cased ``\\w+``) occur twice in
it. Both settings run in the same process on the same prompts, each as concurrent requests (the model batches them);
the order of the two sides alternates over ``--rounds`` (greedy decoding: the answers do not change, only timings).
Prints ONE JSON line: per setting the looping share, the share that ran to ``max_tokens``, mean answer tokens.

    uv run python bench/looping.py [--questions 20] [--max-tokens 256] [--rounds 1] [--max-batch 20]
        [--context-chars N] [--show]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_ray.generation.context import ContextChunk
from rag_ray.generation.prompts import PromptEngineer, PromptRequest
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams
from rag_ray.llm.local import NO_REPEAT_NGRAM_SIZE, REPETITION_PENALTY, TransformersLLM

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
SETTINGS = {"old": {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0},
            "current": {"repetition_penalty": REPETITION_PENALTY, "no_repeat_ngram_size": NO_REPEAT_NGRAM_SIZE}}
NGRAM = 8


def rag_prompts(count: int, max_tokens: int, context_chars: int) -> list[list[ChatMessage]]:
    """The first ``count`` judged test claims as questions over their judged abstracts."""
    judged: dict[str, list[str]] = {}
    for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, _ = line.split("\t")
        judged.setdefault(query_id, []).append(doc_id)
    queries = {q["_id"]: q["text"] for q in map(json.loads, (SCIFACT / "queries.jsonl").open())}
    chosen = list(judged)[:count]
    wanted = {d for q in chosen for d in judged[q]}
    docs = {d["_id"]: d for d in map(json.loads, (SCIFACT / "corpus.jsonl").open()) if d["_id"] in wanted}
    engineer = PromptEngineer(context_window=2048)
    prompts = []
    for query_id in chosen:
        contexts = [ContextChunk(d, f"{docs[d]['title']}. {docs[d]['text']}"[:context_chars], 1.0)
                    for d in judged[query_id]]
        question = f"Is this claim true: {queries[query_id]}"
        prompts.append(engineer.build(PromptRequest(question, contexts), "simple", max_tokens=max_tokens).messages)
    return prompts


def loops(text: str, n: int = NGRAM) -> bool:
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) < len(grams)


@dataclass
class Side:
    name: str
    answers: list[Completion]
    seconds: float

    def report(self) -> dict[str, Any]:
        count = len(self.answers)
        return {"looping_share": round(sum(loops(a.text) for a in self.answers) / count, 3),
                "hit_max_tokens_share": round(sum(a.finish_reason == "length" for a in self.answers) / count, 3),
                "mean_answer_tokens": round(sum(a.usage.completion_tokens for a in self.answers) / count, 1),
                "seconds": round(self.seconds, 1), **SETTINGS[self.name]}


async def ask_all(llm: TransformersLLM, prompts: list[list[ChatMessage]], name: str, max_tokens: int) -> Side:
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens, extra=SETTINGS[name])
    start = time.perf_counter()
    answers = await asyncio.gather(*(llm.generate(p, params) for p in prompts))
    return Side(name, list(answers), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=20, help="rows per batched generate call")
    parser.add_argument("--context-chars", type=int, default=100_000, help="cut each abstract to this length")
    parser.add_argument("--show", action="store_true", help="print each answer (to stderr)")
    args = parser.parse_args()
    prompts = rag_prompts(args.questions, args.max_tokens, args.context_chars)
    # every question of a side waits for the others: one batch per side however slowly the prompts are encoded
    llm = TransformersLLM(max_queue=max(8, args.questions), max_batch=args.max_batch, batch_wait_s=60.0)
    sides: dict[str, Side] = {}
    for round_no in range(args.rounds):
        for name in (("old", "current") if round_no % 2 == 0 else ("current", "old")):
            side = asyncio.run(ask_all(llm, prompts, name, args.max_tokens))
            if name not in sides or side.seconds < sides[name].seconds:
                sides[name] = side
    if args.show:
        import sys

        for name, side in sides.items():
            for answer in side.answers:
                print(f"[{name}] loops={loops(answer.text)} {answer.text!r}", file=sys.stderr)
    old, current = sides["old"].report(), sides["current"].report()
    print(json.dumps({"bench": "looping", "model": llm.model, "questions": len(prompts), "ngram": NGRAM,
                      "max_tokens": args.max_tokens, "context_chars": args.context_chars, "decoding": "greedy",
                      "old": old, "current": current}))


if __name__ == "__main__":
    main()
