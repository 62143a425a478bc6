"""The evaluation gate of ``index switch``: the candidate collection must not score worse than the live one.

Both are searched with the same eval set, through the same retrieval pipeline (the server's fusion, reranker and
search options), once per strategy: ``dense`` — the embedding model alone — and the server's default (hybrid where
the store has BM25), so a worse model cannot hide behind BM25. Every quality metric of the candidate must be at
least the live one's minus ``tolerance`` (absolute); latency is reported, not gated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_ray.config import Settings
from rag_ray.errors import Conflict, InvalidInput
from rag_ray.evaluation import Dataset, EvalReport, evaluate, load_eval_set
from rag_ray.evaluation.runner import DEFAULT_FETCH_K
from rag_ray.retrieval.service import RetrievalService
from rag_ray.store.milvus import SearchStrategy

DEFAULT_TOLERANCE = 0.01


class GateFailed(Conflict):
    code = "evaluation_gate_failed"


@dataclass(frozen=True)
class EvalGate:
    dataset: Dataset
    tolerance: float = DEFAULT_TOLERANCE
    k: int = 10
    fetch_k: int = DEFAULT_FETCH_K

    @classmethod
    def from_files(cls, queries: Path, qrels: Path, **options: Any) -> EvalGate:
        return cls(load_eval_set(queries, qrels), **options)

    @classmethod
    def configured(cls, settings: Settings, queries: Path | None = None, qrels: Path | None = None,
                   tolerance: float | None = None) -> EvalGate:
        """The gate over ``queries``/``qrels``, else the configured eval set (``RAG_EVAL_QUERIES``/``RAG_EVAL_QRELS``);
        InvalidInput (naming ``queries``) when there is neither: the caller can give one, or force."""
        queries = queries or settings.eval_queries
        qrels = qrels or settings.eval_qrels
        if queries is None or qrels is None:
            raise InvalidInput("the switch gate needs an eval set: pass --queries and --qrels, set RAG_EVAL_QUERIES "
                              "and RAG_EVAL_QRELS, or --force to switch without evaluating", field="queries")
        tolerance = settings.eval_tolerance if tolerance is None else tolerance
        return cls.from_files(Path(queries), Path(qrels), tolerance=tolerance,
                              fetch_k=min(DEFAULT_FETCH_K, settings.max_k))

    def strategies(self, service: RetrievalService) -> list[SearchStrategy]:
        default = service.default_strategy
        return ["dense"] if default == "dense" else ["dense", default]

    def run(self, live: RetrievalService, candidate: RetrievalService, names: tuple[str, str] = ("live", "candidate")
            ) -> GateResult:
        result = GateResult(passed=True, tolerance=self.tolerance, live=names[0], candidate=names[1])
        for strategy in self.strategies(live):
            before = evaluate(live, self.dataset, strategy=strategy, k=self.k, fetch_k=self.fetch_k)
            after = evaluate(candidate, self.dataset, strategy=strategy, k=self.k, fetch_k=self.fetch_k)
            result.reports[strategy] = {"live": before, "candidate": after}
            for metric, old in before.quality().items():
                new = after.metrics[metric]
                ok = new >= old - self.tolerance - 1e-9
                result.rows.append(GateRow(strategy, metric, old, new, ok))
                result.passed &= ok
        return result


@dataclass(frozen=True)
class GateRow:
    strategy: str
    metric: str
    live: float
    candidate: float
    ok: bool

    @property
    def delta(self) -> float:
        return round(self.candidate - self.live, 4)


@dataclass
class GateResult:
    passed: bool
    tolerance: float
    live: str
    candidate: str
    rows: list[GateRow] = field(default_factory=list)
    reports: dict[str, dict[str, EvalReport]] = field(default_factory=dict)

    def failures(self) -> list[GateRow]:
        return [r for r in self.rows if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "tolerance": self.tolerance, "live": self.live, "candidate": self.candidate,
                "rows": [{**r.__dict__, "delta": r.delta} for r in self.rows],
                "latency_ms": {strategy: {side: {k: v for k, v in report.metrics.items() if k.endswith("_ms")}
                                          for side, report in pair.items()}
                               for strategy, pair in self.reports.items()}}

    def summary(self) -> str:
        failed = ", ".join(f"{r.strategy} {r.metric} {r.candidate:.4f} vs {r.live:.4f}" for r in self.failures())
        return (f"evaluation gate {'passed' if self.passed else 'failed'}: {self.candidate} vs live {self.live} "
                f"(tolerance {self.tolerance:g})" + (f"; worse: {failed}" if failed else ""))
