"""Shared data for the generation tests (no tests here): a small retrieved context, and answers that are
known to be grounded in it, known to hallucinate, or off topic — in English and Korean."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.generation.context import ContextChunk, UsedChunk, fit_to_budget
from rag_ray.generation.evaluation import ResponseEvaluator
from rag_ray.llm.base import ChatMessage
from rag_ray.llm.fake import FakeLLM
from rag_ray.types import SearchHit

QUERY = "How does self-attention work in the Transformer architecture?"
CONTEXT = [
    "The Transformer architecture was introduced in 2017 by Vaswani et al. in the paper Attention Is All You Need.",
    "Self-attention computes weights between all positions of the input sequence using query, key and value vectors.",
    "Transformers replaced recurrent networks in machine translation because attention parallelises well.",
]
GROUNDED = ("The Transformer architecture was introduced in 2017 [1]. Self-attention computes weights between all "
            "positions of the input sequence [2]. It uses query, key and value vectors for every position [2].")
HALLUCINATION = "The Transformer was invented in 1995 by IBM for speech recognition on mainframe computers."
HALLUCINATED = (f"{HALLUCINATION} Self-attention computes weights between all positions of the input sequence [2]. "
                "Training it requires a cluster of 512 quantum processors.")
OFF_TOPIC = "Bananas are yellow tropical fruits that are rich in potassium and vitamins."

QUERY_KO = "머신러닝과 딥러닝의 차이점을 설명해주세요"
CONTEXT_KO = [
    "머신러닝은 데이터로부터 패턴을 학습하는 인공지능의 한 분야이다.",
    "딥러닝은 여러 층의 인공신경망을 사용하는 머신러닝의 하위 분야이다.",
    "딥러닝은 대량의 데이터와 GPU 연산을 필요로 한다.",
]
GROUNDED_KO = ("머신러닝은 데이터로부터 패턴을 학습하는 인공지능의 한 분야입니다 [1]. 딥러닝은 여러 층의 인공신경망을 "
               "사용하는 머신러닝의 하위 분야입니다 [2]. 딥러닝은 대량의 데이터와 GPU 연산을 필요로 합니다 [3].")
HALLUCINATED_KO = ("머신러닝은 1950년 IBM이 발명한 데이터베이스 관리 기술입니다. 딥러닝은 양자컴퓨터에서만 실행되는 "
                   "특수한 암호화 알고리즘입니다.")


def hits(texts: Sequence[str] = tuple(CONTEXT)) -> list[SearchHit]:
    return [SearchHit(chunk_id=f"c{i}", doc_id=f"d{i}", source_uri=f"file:///docs/doc{i}.md", chunk_index=i,
                      text=t, score=round(0.9 - 0.1 * i, 2), metadata={"title": f"Doc {i}"})
            for i, t in enumerate(texts)]


def chunks(texts: Sequence[str] = tuple(CONTEXT)) -> list[ContextChunk]:
    return [ContextChunk.from_hit(h) for h in hits(texts)]


def used(texts: Sequence[str] = tuple(CONTEXT)) -> list[UsedChunk]:
    return fit_to_budget(chunks(texts), 10_000).used


def evaluator(**kwargs: object) -> ResponseEvaluator:
    return ResponseEvaluator(FakeEmbedder(), **kwargs)  # type: ignore[arg-type]


def fixed(text: str) -> Callable[[Sequence[ChatMessage]], str]:
    def respond(messages: Sequence[ChatMessage]) -> str:
        return text

    return respond


def llm(text: str, provider: str = "fake", **kwargs: object) -> FakeLLM:
    return FakeLLM("m", provider=provider, responder=fixed(text), **kwargs)  # type: ignore[arg-type]
