"""Answer records (question, passages used, model, scores, timings), feedback on them, and the per-provider quality
estimate that feedback and evaluation scores feed (read by the ``quality`` load-balancing strategy)."""

from rag_ray.answers.quality import Estimate, Evidence, QualityBook
from rag_ray.answers.service import AnswerService
from rag_ray.answers.store import AnswerDraft, AnswerStore, Feedback, PassageUsed, StoredAnswer, Vote

__all__ = ["AnswerDraft", "AnswerService", "AnswerStore", "Estimate", "Evidence", "Feedback", "PassageUsed",
           "QualityBook", "StoredAnswer", "Vote"]
