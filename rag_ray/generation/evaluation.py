"""Scores a candidate answer without a reference answer.

Metrics (registry ``METRICS``; each returns a score in [0, 1], a confidence and an explanation):

- ``relevance``: query ↔ answer embedding similarity blended with the share of query key terms in the answer.
- ``accuracy`` (groundedness): every answer sentence is matched against every context passage —
  ``support = lexical_weight · containment(sentence terms ⊆ passage terms) + (1 − lexical_weight) · similarity``,
  max over passages, halved when the sentence states a number no passage contains. Sentences under
  ``support_threshold`` are *unsupported*. Skipped (confidence 0) when there is no context.
- ``completeness``: coverage of the query's key terms and aspects, damped for very short answers.
- ``clarity``: sentence length, repetition, paragraphing of long answers.
- ``coherence``: similarity of adjacent sentences, minus a penalty for self-contradicting pairs
  (near-identical statements where exactly one is negated).
- ``llm_judge`` (only with a judge LLM): the judge's 0–10 score parsed from its JSON reply.

Metrics with confidence 0 are left out of the weighted ``overall``. Raw cosine similarities are rescaled from
``[similarity_floor, similarity_ceiling]`` to [0, 1] because embedders differ in where "unrelated" sits.
All embeddings of one ``evaluate_many`` call go through a single ``embed`` call; an ``EvaluationSession`` embeds the
question and context once for every answer scored against them.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from rag_ray.embedding.base import Embedder, l2_normalize
from rag_ray.generation.context import ContextChunk, UsedChunk
from rag_ray.generation.textutil import (
    Tokenizer,
    citation_numbers,
    containment,
    content_terms,
    has_negation,
    jaccard,
    split_sentences,
    strip_citations,
    tokenize,
)
from rag_ray.llm.base import ChatMessage, Completion, GenerationParams

CORE_METRICS = ("relevance", "accuracy", "completeness", "clarity", "coherence")
_NUMBER = re.compile(r"^\d[\d.,]*$")
_ASPECT_SPLIT = re.compile(r",|;|\?|\band\b|\bor\b|\bvs\.?|\bversus\b|및|그리고|또는|혹은", re.IGNORECASE)
_CONTRADICTION_MARKERS = ("contradicts", "contrary to what", "모순", "반대로 말하면")


@dataclass
class EvaluationWeights:
    relevance: float = 0.30
    accuracy: float = 0.30
    completeness: float = 0.20
    clarity: float = 0.10
    coherence: float = 0.10
    llm_judge: float = 0.25  # used only when a judge LLM is configured

    def get(self, metric: str) -> float:
        return float(getattr(self, metric, 0.0))


@dataclass
class QualityThresholds:
    min_relevance: float = 0.0
    min_accuracy: float = 0.0
    min_completeness: float = 0.0
    min_clarity: float = 0.0
    min_coherence: float = 0.0
    min_overall: float = 0.0

    def failures(self, evaluation: Evaluation) -> list[str]:
        """Names of the thresholds this evaluation misses (metrics that were not computed are not judged)."""
        failed = [m for m, s in evaluation.scores.items()
                  if s.confidence > 0 and s.score < getattr(self, f"min_{m}", 0.0)]
        return failed + (["overall"] if evaluation.overall < self.min_overall else [])


@dataclass
class EvaluatorConfig:
    support_threshold: float = 0.5
    lexical_weight: float = 0.6  # in sentence support
    relevance_lexical_weight: float = 0.4
    similarity_floor: float = 0.1
    similarity_ceiling: float = 0.7
    ideal_sentence_tokens: tuple[int, int] = (5, 35)
    metrics: tuple[str, ...] = CORE_METRICS


@dataclass
class MetricScore:
    metric: str
    score: float
    confidence: float = 1.0
    explanation: str = ""


@dataclass
class SentenceSupport:
    sentence: str
    support: float
    supported: bool
    best_passage: int | None  # citation number of the most supporting passage
    weight: int = 1  # distinct content terms: long claims count more than short ones


@dataclass
class Evaluation:
    scores: dict[str, MetricScore]
    overall: float
    sentences: list[SentenceSupport] = field(default_factory=list)
    invalid_citations: list[int] = field(default_factory=list)
    answer_vector: np.ndarray | None = field(default=None, repr=False, compare=False)  # reused by consensus

    @property
    def unsupported_sentences(self) -> list[str]:
        return [s.sentence for s in self.sentences if not s.supported]

    def score(self, metric: str) -> float:
        return self.scores[metric].score if metric in self.scores else 0.0

    def score_dict(self) -> dict[str, float]:
        return {m: round(s.score, 4) for m, s in self.scores.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"overall": round(self.overall, 4), "scores": {m: asdict(s) for m, s in self.scores.items()},
                "unsupported_sentences": self.unsupported_sentences, "invalid_citations": self.invalid_citations}


# ---- the per-answer sample: terms and vectors computed once ------------------------------------------------
@dataclass
class Passage:
    number: int
    text: str


def as_passages(contexts: Sequence[UsedChunk | ContextChunk | str]) -> list[Passage]:
    out = []
    for i, c in enumerate(contexts, start=1):
        if isinstance(c, UsedChunk):
            out.append(Passage(c.number, c.text))
        else:
            out.append(Passage(i, c.text if isinstance(c, ContextChunk) else str(c)))
    return out


@dataclass
class Sample:
    query: str
    answer: str
    sentences: list[str]  # citations kept, markup removed
    passages: list[Passage]
    query_terms: list[str]
    answer_terms: list[str]
    sentence_terms: list[list[str]]
    passage_terms: list[list[str]]
    query_vec: np.ndarray
    answer_vec: np.ndarray
    sentence_vecs: np.ndarray
    passage_vecs: np.ndarray
    supports: list[SentenceSupport] = field(default_factory=list)


def rescale(similarity: float, cfg: EvaluatorConfig) -> float:
    span = max(1e-6, cfg.similarity_ceiling - cfg.similarity_floor)
    return float(min(1.0, max(0.0, (similarity - cfg.similarity_floor) / span)))


# ---- metrics ------------------------------------------------------------------------------------------------
MetricFn = Callable[[Sample, EvaluatorConfig], MetricScore]
METRICS: dict[str, MetricFn] = {}


def metric(name: str) -> Callable[[MetricFn], MetricFn]:
    def decorator(fn: MetricFn) -> MetricFn:
        METRICS[name] = fn
        return fn

    return decorator


@metric("relevance")
def score_relevance(s: Sample, cfg: EvaluatorConfig) -> MetricScore:
    if not s.answer_terms:
        return MetricScore("relevance", 0.0, 1.0, "empty answer")
    semantic = rescale(float(s.query_vec @ s.answer_vec), cfg)
    lexical = containment(s.query_terms, s.answer_terms)
    w = cfg.relevance_lexical_weight
    return MetricScore("relevance", (1 - w) * semantic + w * lexical, 1.0,
                       f"semantic {semantic:.2f}, query terms covered {lexical:.2f}")


def sentence_support(s: Sample, index: int, cfg: EvaluatorConfig) -> SentenceSupport:
    terms = s.sentence_terms[index]
    sims = s.passage_vecs @ s.sentence_vecs[index]
    best, best_number = 0.0, None
    for j, passage in enumerate(s.passages):
        value = cfg.lexical_weight * containment(terms, s.passage_terms[j]) + \
            (1 - cfg.lexical_weight) * rescale(float(sims[j]), cfg)
        if value > best:
            best, best_number = value, passage.number
    all_passage_terms = {t for pt in s.passage_terms for t in pt}
    if any(_NUMBER.match(t) and t not in all_passage_terms for t in terms):
        best *= 0.5  # a number the context never states is the classic hallucination
    return SentenceSupport(s.sentences[index], best, best >= cfg.support_threshold, best_number, len(set(terms)))


def compute_supports(s: Sample, cfg: EvaluatorConfig) -> list[SentenceSupport]:
    """Support of every sentence with ≥ 2 content terms (shorter ones — "Yes." — carry no claim)."""
    if not s.passages:
        return []
    return [sentence_support(s, i, cfg) for i in range(len(s.sentences)) if len(set(s.sentence_terms[i])) >= 2]


@metric("accuracy")
def score_accuracy(s: Sample, cfg: EvaluatorConfig) -> MetricScore:
    if not s.passages:
        return MetricScore("accuracy", 0.5, 0.0, "no context to check the answer against")
    if not s.supports:
        return MetricScore("accuracy", 0.0 if not s.answer_terms else 0.5, 0.3, "no checkable statements")
    supported = sum(x.weight for x in s.supports if x.supported)
    unsupported = sum(1 for x in s.supports if not x.supported)
    return MetricScore("accuracy", supported / sum(x.weight for x in s.supports), min(1.0, len(s.supports) / 3),
                       f"{unsupported} of {len(s.supports)} statements unsupported by the context")


def query_aspects(query_terms: list[str], query: str, tokenizer: Tokenizer = tokenize) -> list[list[str]]:
    parts = [content_terms(p, tokenizer) for p in _ASPECT_SPLIT.split(query)]
    parts = [p for p in parts if p]
    return parts if len(parts) > 1 else [[t] for t in dict.fromkeys(query_terms)]


@metric("completeness")
def score_completeness(s: Sample, cfg: EvaluatorConfig) -> MetricScore:
    if not s.answer_terms:
        return MetricScore("completeness", 0.0, 1.0, "empty answer")
    answer = set(s.answer_terms)
    term_cov = containment(s.query_terms, answer)
    aspects = query_aspects(s.query_terms, s.query)
    covered = sum(1 for a in aspects if containment(a, answer) >= 0.5)
    aspect_cov = covered / len(aspects) if aspects else 1.0
    length_factor = min(1.0, len(s.answer_terms) / 10) ** 0.5
    return MetricScore("completeness", (0.5 * term_cov + 0.5 * aspect_cov) * length_factor, 1.0,
                       f"{covered}/{len(aspects)} aspects, key terms {term_cov:.2f}, length factor {length_factor:.2f}")


def _length_score(n_tokens: int, cfg: EvaluatorConfig) -> float:
    low, high = cfg.ideal_sentence_tokens
    if n_tokens < low:
        return 0.5 + 0.5 * n_tokens / low
    return 1.0 if n_tokens <= high else high / n_tokens


def repetition_ratio(sentence_terms: list[list[str]]) -> float:
    repeated = sum(1 for i, t in enumerate(sentence_terms)
                   if t and any(jaccard(t, sentence_terms[j]) >= 0.8 for j in range(i)))
    return repeated / len(sentence_terms) if sentence_terms else 0.0


@metric("clarity")
def score_clarity(s: Sample, cfg: EvaluatorConfig) -> MetricScore:
    if not s.sentences:
        return MetricScore("clarity", 0.0, 1.0, "empty answer")
    lengths = [len(tokenize(x)) for x in s.sentences]
    length = sum(_length_score(n, cfg) for n in lengths) / len(lengths)
    repetition = repetition_ratio(s.sentence_terms)
    words = len(tokenize(s.answer))
    structure = 0.6 if words > 150 and "\n" not in s.answer.strip() else 1.0
    score = 0.4 * length + 0.4 * (1 - repetition) + 0.2 * structure
    return MetricScore("clarity", score, 1.0,
                       f"sentence length {length:.2f}, repetition {repetition:.2f}, structure {structure:.1f}")


def contradiction_pairs(s: Sample) -> int:
    terms = s.sentence_terms
    pairs = sum(1 for i in range(len(terms)) for j in range(i + 1, len(terms))
                if jaccard(terms[i], terms[j]) >= 0.5 and has_negation(s.sentences[i]) != has_negation(s.sentences[j]))
    return pairs + sum(1 for m in _CONTRADICTION_MARKERS if m in s.answer.lower())


@metric("coherence")
def score_coherence(s: Sample, cfg: EvaluatorConfig) -> MetricScore:
    if len(s.sentences) < 2:
        return MetricScore("coherence", 1.0 if s.sentences else 0.0, 0.3, "single statement")
    vecs = s.sentence_vecs
    adjacent = [float(vecs[i] @ vecs[i + 1]) for i in range(len(vecs) - 1)]
    flow = sum(rescale(x, EvaluatorConfig(similarity_floor=0.0, similarity_ceiling=0.5)) for x in adjacent)
    flow /= len(adjacent)
    contradictions = contradiction_pairs(s)
    score = max(0.0, 0.5 + 0.5 * flow - 0.25 * contradictions)
    return MetricScore("coherence", score, 1.0, f"adjacent similarity {flow:.2f}, {contradictions} contradictions")


# ---- LLM judge ---------------------------------------------------------------------------------------------
class JudgeLLM(Protocol):
    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion: ...


_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_SCORE_TEXT = re.compile(r"score\W{0,5}(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.IGNORECASE)

JUDGE_PROMPT = (
    "Rate the ANSWER to the QUESTION for factual correctness against the CONTEXT, relevance and helpfulness.\n"
    "Reply with only a JSON object: {{\"score\": <0-10>, \"reason\": \"<one sentence>\"}}.\n\n"
    "QUESTION:\n{query}\n\nCONTEXT:\n{context}\n\nANSWER:\n{answer}")


def _normalise_score(value: float, scale: float | None = None) -> float | None:
    if scale:
        return min(1.0, max(0.0, value / scale))
    for top in (1.0, 10.0, 100.0):
        if 0.0 <= value <= top:
            return value / top
    return None


def parse_judge_score(text: str) -> float | None:
    """A [0, 1] score from a judge reply: a JSON ``{"score": …}`` anywhere in it, else ``score: 8/10`` text."""
    for match in _JSON_OBJECT.finditer(text):
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("score"), int | float):
            return _normalise_score(float(data["score"]))
    found = _SCORE_TEXT.search(text)
    if found:
        return _normalise_score(float(found.group(1)), float(found.group(2)) if found.group(2) else None)
    return None


# ---- the evaluator ------------------------------------------------------------------------------------------
Contexts = Sequence[UsedChunk | ContextChunk | str]


class ResponseEvaluator:
    def __init__(self, embedder: Embedder, *, weights: EvaluationWeights | None = None,
                 thresholds: QualityThresholds | None = None, config: EvaluatorConfig | None = None,
                 judge: JudgeLLM | None = None, judge_timeout_s: float = 30.0, tokenizer: Tokenizer = tokenize):
        self.embedder = embedder
        self.weights = weights or EvaluationWeights()
        self.thresholds = thresholds or QualityThresholds()
        self.config = config or EvaluatorConfig()
        self.judge = judge
        self.judge_timeout_s = judge_timeout_s
        self.tokenizer = tokenizer

    def set_evaluation_weights(self, weights: EvaluationWeights) -> None:
        self.weights = weights

    def set_quality_thresholds(self, thresholds: QualityThresholds) -> None:
        self.thresholds = thresholds

    def session(self, query: str, contexts: Contexts = (), *, metrics: Sequence[str] | None = None
                ) -> EvaluationSession:
        """An evaluation of several answers to one question: the query and context are embedded once."""
        return EvaluationSession(self, query, contexts, metrics)

    def evaluate(self, query: str, answer: str, contexts: Contexts = (), *,
                 metrics: Sequence[str] | None = None) -> Evaluation:
        return self.session(query, contexts, metrics=metrics).evaluate_many([answer])[0]

    def evaluate_many(self, query: str, answers: Sequence[str], contexts: Contexts = (), *,
                      metrics: Sequence[str] | None = None) -> list[Evaluation]:
        return self.session(query, contexts, metrics=metrics).evaluate_many(answers)

    async def aevaluate_many(self, query: str, answers: Sequence[str], contexts: Contexts = (), *,
                             metrics: Sequence[str] | None = None) -> list[Evaluation]:
        return await self.session(query, contexts, metrics=metrics).aevaluate_many(answers)

    def passes(self, evaluation: Evaluation) -> bool:
        return not self.thresholds.failures(evaluation)

    def overall(self, scores: dict[str, MetricScore]) -> float:
        """Weighted mean of the metrics that were computed with some confidence."""
        weighted = [(self.weights.get(m), s.score) for m, s in scores.items() if s.confidence > 0]
        total = sum(w for w, _ in weighted)
        return sum(w * x for w, x in weighted) / total if total > 0 else 0.0

    async def judge_score(self, query: str, answer: str, passages: list[Passage]) -> MetricScore:
        assert self.judge is not None
        context = "\n".join(f"[{p.number}] {p.text}" for p in passages) or "(none)"
        prompt = JUDGE_PROMPT.format(query=query, context=context, answer=answer)
        try:
            completion = await asyncio.wait_for(
                self.judge.generate([ChatMessage("user", prompt)], GenerationParams(temperature=0.0, max_tokens=128)),
                self.judge_timeout_s)
        except Exception as exc:  # a judge failure must not fail the answer; it just is not counted
            return MetricScore("llm_judge", 0.0, 0.0, f"judge failed: {type(exc).__name__}")
        value = parse_judge_score(completion.text)
        if value is None:
            return MetricScore("llm_judge", 0.0, 0.0, "judge reply had no score")
        return MetricScore("llm_judge", value, 1.0, f"judge {completion.provider}:{completion.model}")


@dataclass
class _Base:
    """What every answer to one question is compared with."""

    query_vec: np.ndarray
    passage_vecs: np.ndarray
    query_terms: list[str]
    passage_terms: list[list[str]]


class EvaluationSession:
    """Scores answers to one question against one context, embedding the question and context only once.

    Answers may arrive one by one (the ensemble scores each candidate as soon as it is generated, while slower
    providers are still working); the first ``evaluate_many`` (or ``prepare``) embeds the shared part.
    Thread-safe: ``aevaluate_many`` runs the CPU work in a worker thread.
    """

    def __init__(self, evaluator: ResponseEvaluator, query: str, contexts: Contexts,
                 metrics: Sequence[str] | None = None):
        self.evaluator = evaluator
        self.query = query
        self.passages = as_passages(contexts)
        self.metrics = [m for m in (metrics or evaluator.config.metrics) if m in METRICS]
        self._base: _Base | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        self._embed([])

    def evaluate_many(self, answers: Sequence[str]) -> list[Evaluation]:
        """Only sentences are embedded (the answer's vector is their normalised mean): embedding the whole answer
        as well would double the encoder work for little change in the similarities."""
        sentence_lists = [split_sentences(a) or [a] for a in answers]
        texts = [strip_citations(x) or " " for sentences in sentence_lists for x in sentences]
        vecs, base = self._embed(texts)
        out, offset = [], 0
        for answer, sentences in zip(answers, sentence_lists, strict=True):
            sentence_vecs = vecs[offset: offset + len(sentences)]
            answer_vec = l2_normalize(sentence_vecs.mean(axis=0, keepdims=True))[0]
            sentences = sentences if answer.strip() else []
            sample = self._sample(base, answer, sentences, answer_vec, sentence_vecs[: len(sentences)])
            out.append(self._score(sample, answer_vec))
            offset += len(sentence_vecs)
        return out

    async def aevaluate_many(self, answers: Sequence[str]) -> list[Evaluation]:
        """``evaluate_many`` off the event loop, plus the LLM judge (in parallel) when one is configured."""
        evaluations = await asyncio.to_thread(self.evaluate_many, answers)
        if self.evaluator.judge is not None and answers:
            judged = await asyncio.gather(*(self.evaluator.judge_score(self.query, a, self.passages)
                                            for a in answers))
            for evaluation, score in zip(evaluations, judged, strict=True):
                evaluation.scores["llm_judge"] = score
                evaluation.overall = self.evaluator.overall(evaluation.scores)
        return evaluations

    def _terms(self, text: str) -> list[str]:
        return content_terms(strip_citations(text), self.evaluator.tokenizer)

    def _embed(self, texts: list[str]) -> tuple[np.ndarray, _Base]:
        """Embeds ``texts``, in the same call as the query and context the first time (one call per batch).
        Repeated texts (identical sentences across candidates) are embedded once."""
        unique = list(dict.fromkeys(texts))
        vecs, base = self._embed_unique(unique)
        index = {t: i for i, t in enumerate(unique)}
        return vecs[[index[t] for t in texts]] if texts else vecs, base

    def _embed_unique(self, texts: list[str]) -> tuple[np.ndarray, _Base]:
        embed = self.evaluator.embedder.embed
        with self._lock:
            if self._base is None:
                n = 1 + len(self.passages)
                vecs = embed([self.query, *(p.text for p in self.passages), *texts], input_type="document")
                self._base = _Base(vecs[0], vecs[1:n], self._terms(self.query),
                                   [self._terms(p.text) for p in self.passages])
                return vecs[n:], self._base
            base = self._base
        if not texts:
            return np.zeros((0, len(base.query_vec)), dtype=np.float32), base
        return embed(texts, input_type="document"), base

    def _sample(self, base: _Base, answer: str, sentences: list[str], answer_vec: np.ndarray,
                sentence_vecs: np.ndarray) -> Sample:
        return Sample(self.query, answer, sentences, self.passages, base.query_terms, self._terms(answer),
                      [self._terms(x) for x in sentences], base.passage_terms, base.query_vec, answer_vec,
                      sentence_vecs, base.passage_vecs)

    def _score(self, sample: Sample, answer_vec: np.ndarray) -> Evaluation:
        config = self.evaluator.config
        sample.supports = compute_supports(sample, config)
        scores = {m: METRICS[m](sample, config) for m in self.metrics}
        for s in scores.values():
            s.score = float(min(1.0, max(0.0, s.score)))
        valid = {p.number for p in sample.passages}
        invalid = sorted({n for n in citation_numbers(sample.answer) if n not in valid}) if valid else []
        return Evaluation(scores, self.evaluator.overall(scores), sample.supports, invalid, answer_vec)


# ---- provider quality tracking ------------------------------------------------------------------------------
class ProviderQualityTracker:
    """EWMA of each provider's overall answer score, for routing that avoids providers that keep scoring low.

    ``weights()`` maps provider → weight in ``[floor, 1]``: the provider's EWMA relative to the best one.
    Unseen providers start at ``prior``. Thread-safe (the manager may call it from several tasks/threads).
    """

    def __init__(self, *, alpha: float = 0.3, prior: float = 0.7, floor: float = 0.1):
        self.alpha = alpha
        self.prior = prior
        self.floor = floor
        self._ewma: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, provider: str, score: float) -> float:
        score = min(1.0, max(0.0, float(score)))
        with self._lock:
            previous = self._ewma.get(provider, self.prior)
            self._ewma[provider] = (1 - self.alpha) * previous + self.alpha * score
            self._counts[provider] = self._counts.get(provider, 0) + 1
            return self._ewma[provider]

    def score(self, provider: str) -> float:
        with self._lock:
            return self._ewma.get(provider, self.prior)

    def weights(self, providers: Sequence[str] | None = None) -> dict[str, float]:
        with self._lock:
            names = list(providers) if providers is not None else list(self._ewma)
            values = {p: self._ewma.get(p, self.prior) for p in names}
        best = max(values.values(), default=0.0)
        if best <= 0:
            return dict.fromkeys(values, 1.0)
        return {p: max(self.floor, v / best) for p, v in values.items()}

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {p: {"ewma": round(v, 4), "count": self._counts.get(p, 0)} for p, v in self._ewma.items()}
