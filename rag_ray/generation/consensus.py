"""Agreement among candidate answers, and how to pick one (registry ``SELECTORS``).

Agreement of two answers = ``semantic_weight · cosine(embeddings) + (1 − semantic_weight) · claim overlap``,
where claim overlap is the share of one answer's sentences (claims) that the other answer also makes
(≥ ``claim_match`` of the claim's key terms found in one of its sentences), averaged both ways.
The consensus score is the mean pairwise agreement. Clusters join answers whose agreement ≥ the threshold
(single link); the biggest cluster is the majority view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rag_ray.embedding.base import Embedder
from rag_ray.errors import InvalidInput
from rag_ray.generation.textutil import (
    Tokenizer,
    containment,
    content_terms,
    split_sentences,
    strip_citations,
    tokenize,
)


@dataclass
class ConsensusResult:
    matrix: np.ndarray  # n × n agreement, 1 on the diagonal
    score: float
    clusters: list[list[int]]  # biggest first
    threshold: float

    @property
    def majority(self) -> list[int]:
        return self.clusters[0] if self.clusters else []

    @property
    def reached(self) -> bool:
        return self.score >= self.threshold

    def centrality(self) -> list[float]:
        """Each answer's mean agreement with the others (1.0 when it is alone)."""
        n = len(self.matrix)
        if n < 2:
            return [1.0] * n
        return [float((self.matrix[i].sum() - 1.0) / (n - 1)) for i in range(n)]


def claims(text: str, tokenizer: Tokenizer = tokenize) -> list[set[str]]:
    out = [set(content_terms(strip_citations(s), tokenizer)) for s in split_sentences(text)]
    return [c for c in out if len(c) >= 2]


def _one_way(a: list[set[str]], b: list[set[str]], claim_match: float) -> float:
    if not a:
        return 0.0
    return sum(1 for claim in a if any(containment(claim, other) >= claim_match for other in b)) / len(a)


def claim_overlap(a: list[set[str]], b: list[set[str]], claim_match: float = 0.6) -> float:
    return (_one_way(a, b, claim_match) + _one_way(b, a, claim_match)) / 2


def agreement_matrix(texts: Sequence[str], embedder: Embedder, *, semantic_weight: float = 0.5,
                     claim_match: float = 0.6, tokenizer: Tokenizer = tokenize,
                     vectors: np.ndarray | None = None) -> np.ndarray:
    """Pairwise agreement; pass ``vectors`` (normalised embeddings of the answers) to skip embedding them again."""
    n = len(texts)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    vecs = vectors if vectors is not None else embedder.embed([strip_citations(t) or " " for t in texts],
                                                              input_type="document")
    cosine = np.clip(vecs @ vecs.T, 0.0, 1.0)
    claim_sets = [claims(t, tokenizer) for t in texts]
    matrix = np.eye(n, dtype=np.float32)
    for i in range(n):
        for j in range(i + 1, n):
            value = semantic_weight * float(cosine[i, j]) + \
                (1 - semantic_weight) * claim_overlap(claim_sets[i], claim_sets[j], claim_match)
            matrix[i, j] = matrix[j, i] = value
    return matrix


def cluster(matrix: np.ndarray, threshold: float) -> list[list[int]]:
    """Single-link clusters (union-find over pairs with agreement ≥ threshold), biggest first."""
    parent = list(range(len(matrix)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(matrix)):
        for j in range(i + 1, len(matrix)):
            if matrix[i, j] >= threshold:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(matrix)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def analyse(texts: Sequence[str], embedder: Embedder, *, threshold: float = 0.7, semantic_weight: float = 0.5,
            vectors: np.ndarray | None = None) -> ConsensusResult:
    matrix = agreement_matrix(texts, embedder, semantic_weight=semantic_weight, vectors=vectors)
    n = len(texts)
    score = 1.0 if n < 2 else float((matrix.sum() - n) / (n * (n - 1)))
    return ConsensusResult(matrix, score, cluster(matrix, threshold), threshold)


# ---- selection ----------------------------------------------------------------------------------------------
Selector = Callable[[Sequence[float], ConsensusResult], int]
SELECTORS: dict[str, Selector] = {}
CONSENSUS_WEIGHT = 0.5


def selector(name: str) -> Callable[[Selector], Selector]:
    def decorator(fn: Selector) -> Selector:
        SELECTORS[name] = fn
        return fn

    return decorator


def _argmax(indices: Sequence[int], key: Callable[[int], float]) -> int:
    return max(indices, key=lambda i: (key(i), -i))  # ties → the earlier candidate


@selector("best_weighted_score")
def select_best_score(qualities: Sequence[float], consensus: ConsensusResult) -> int:
    """The highest weighted quality score, agreement ignored."""
    return _argmax(range(len(qualities)), lambda i: qualities[i])


@selector("majority_cluster")
def select_majority(qualities: Sequence[float], consensus: ConsensusResult) -> int:
    """The best answer of the biggest cluster (equal sizes: the cluster with the higher mean quality)."""
    clusters = consensus.clusters or [list(range(len(qualities)))]
    biggest = len(clusters[0])
    candidates = [c for c in clusters if len(c) == biggest]
    chosen = max(candidates, key=lambda c: sum(qualities[i] for i in c) / len(c))
    return _argmax(chosen, lambda i: qualities[i])


@selector("consensus_weighted")
def select_consensus_weighted(qualities: Sequence[float], consensus: ConsensusResult) -> int:
    """Quality blended with centrality (mean agreement with the others): favours well-scored mainstream answers."""
    central = consensus.centrality()
    return _argmax(range(len(qualities)),
                   lambda i: (1 - CONSENSUS_WEIGHT) * qualities[i] + CONSENSUS_WEIGHT * central[i])


def select(method: str, qualities: Sequence[float], consensus: ConsensusResult) -> int:
    try:
        fn = SELECTORS[method]
    except KeyError:
        raise InvalidInput(f"unknown selection method {method!r} (known: {', '.join(sorted(SELECTORS))})",
                           field="selection_method") from None
    return fn(qualities, consensus)
