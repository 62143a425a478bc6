"""Retrieval quality: BEIR-style eval sets, ranking metrics (nDCG@10, recall@k, MRR) and latency, baselines.

``rag-cli eval run``, the index switch gate (``rag_ray.index.gate``) and ``bench/retrieval.py`` share this code.
"""

from rag_ray.evaluation.beir import Dataset, ingest_corpus, load_dataset, load_eval_set
from rag_ray.evaluation.metrics import QUALITY_METRICS, query_metrics
from rag_ray.evaluation.runner import CorpusIds, EvalReport, Regression, evaluate, evaluate_async, regressions

__all__ = ["QUALITY_METRICS", "CorpusIds", "Dataset", "EvalReport", "Regression", "evaluate", "evaluate_async",
           "ingest_corpus", "load_dataset", "load_eval_set", "query_metrics", "regressions"]
