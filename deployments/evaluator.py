"""Answer evaluation as a Serve deployment: scoring is sync CPU work (embedding + per-sentence matching), so it runs
in its own autoscaled replicas, next to its own embedder, instead of on the router's event loop.

The router reaches it through ``HandleEvaluator``, which offers the part of ``ResponseEvaluator`` the generators use
(``session``, ``thresholds``, ``embedder``), so ``rag_ray.generation`` stays Ray-free. A replica keeps recent
sessions (one per question + context) so a question and its context are embedded once for all of its candidates
— when the candidates land on the same replica; elsewhere they are embedded again, with the same result.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from deployments.handles import awaited, own_error
from rag_ray.config import Settings
from rag_ray.embedding import create_embedder
from rag_ray.errors import Overloaded
from rag_ray.generation import (
    ConsensusResult,
    Evaluation,
    GenerationService,
    ProviderQualityTracker,
    QualityThresholds,
    ResponseEvaluator,
    analyse,
)
from rag_ray.generation.context import ContextChunk, UsedChunk
from rag_ray.generation.evaluation import Contexts, EvaluationSession, as_passages
from rag_ray.observability.deadline import check_deadline, remaining_budget
from rag_ray.types import InputType

Passages = list[tuple[int, str]]  # (citation number, text): all the evaluator needs of a context chunk


def session_key(query: str, passages: Passages, metrics: Sequence[str] | None) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in (query, *(f"{n}\x1f{t}" for n, t in passages), *(metrics or ())):
        digest.update(part.encode())
        digest.update(b"\x1e")
    return digest.hexdigest()


def as_used(passages: Passages) -> list[UsedChunk]:
    return [UsedChunk(n, ContextChunk(id=str(n), text=t), t) for n, t in passages]


class EvaluatorDeployment:
    def __init__(self, settings: Settings, max_sessions: int = 256):
        self.evaluator = ResponseEvaluator(create_embedder(settings))
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, EvaluationSession] = OrderedDict()
        self._lock = threading.Lock()

    def info(self) -> dict[str, object]:
        embedder = self.evaluator.embedder
        return {"provider": embedder.provider, "model": embedder.model, "dimension": embedder.dimension}

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"sessions": len(self._sessions)}

    def _session(self, query: str, passages: Passages, metrics: Sequence[str] | None) -> EvaluationSession:
        key = session_key(query, passages, metrics)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = self.evaluator.session(query, as_used(passages), metrics=metrics)
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    async def prepare(self, query: str, passages: Passages, metrics: Sequence[str] | None = None) -> None:
        """Embed the question and context ahead of the answers (while they are still being generated)."""
        await asyncio.to_thread(self._session(query, passages, metrics).prepare)

    async def score(self, query: str, passages: Passages, answers: Sequence[str],
                    metrics: Sequence[str] | None = None) -> list[Evaluation]:
        return await self._session(query, passages, metrics).aevaluate_many(list(answers))

    async def consensus(self, texts: Sequence[str], threshold: float) -> ConsensusResult:
        return await asyncio.to_thread(analyse, list(texts), self.evaluator.embedder, threshold=threshold)

    async def embed(self, texts: Sequence[str], input_type: InputType = "document") -> np.ndarray:
        return await asyncio.to_thread(self.evaluator.embedder.embed, list(texts), input_type=input_type)


# ---- the router side --------------------------------------------------------------------------------------
# Every call is bounded by the request's deadline and cancelled with the task awaiting it (``awaited``), so scoring
# for a request that timed out or whose client left stops too.
def unwrap(exc: BaseException) -> BaseException:
    """Our own error back from Ray's wrapper; a full evaluator queue is a 503 with Retry-After, not a 500."""
    return own_error(exc, lambda retry_after: Overloaded("the answer evaluator is at capacity; retry shortly",
                                                         retry_after=retry_after))


class HandleSession:
    """``EvaluationSession`` over the deployment: ``prepare`` runs in a worker thread (the generators call it with
    ``asyncio.to_thread``), ``aevaluate_many`` on the event loop."""

    def __init__(self, handle: Any, query: str, contexts: Contexts, metrics: Sequence[str] | None):
        self.handle = handle
        self.query = query
        self.passages: Passages = [(p.number, p.text) for p in as_passages(contexts)]
        self.metrics = list(metrics) if metrics else None

    def prepare(self) -> None:
        """Bounded by the request's deadline (this runs in a worker thread, where cancellation cannot reach)."""
        response = self.handle.prepare.remote(self.query, self.passages, self.metrics)
        try:
            response.result(timeout_s=remaining_budget())
        except TimeoutError:
            response.cancel()
            check_deadline("embedding the question and its context")
            raise
        except Exception as exc:
            raise unwrap(exc) from None

    async def aevaluate_many(self, answers: Sequence[str]) -> list[Evaluation]:
        result: list[Evaluation] = await awaited(
            self.handle.score.remote(self.query, self.passages, list(answers), self.metrics), unwrap)
        return result


class HandleSyncEmbedder:
    """The sync embedder the ensemble's consensus falls back to when answers carry no vectors — never with
    evaluations from the deployment, which always carry them. Call only off the event loop."""

    def __init__(self, handle: Any, info: dict[str, object]):
        self.handle = handle
        self.provider, self.model = str(info["provider"]), str(info["model"])
        self.dimension = int(info["dimension"])  # type: ignore[call-overload]

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        result: np.ndarray = self.handle.embed.remote(list(texts), input_type).result(timeout_s=remaining_budget())
        return result


class HandleEvaluator:
    """What the generators use of ``ResponseEvaluator``, over a handle to ``EvaluatorDeployment``."""

    def __init__(self, handle: Any, info: dict[str, object], thresholds: QualityThresholds | None = None):
        self.handle = handle
        self.thresholds = thresholds or QualityThresholds()
        self.embedder = HandleSyncEmbedder(handle, info)
        self.judge = None

    def session(self, query: str, contexts: Contexts = (), *, metrics: Sequence[str] | None = None) -> HandleSession:
        return HandleSession(self.handle, query, contexts, metrics)

    async def consensus(self, texts: Sequence[str], threshold: float = 0.7) -> ConsensusResult:
        result: ConsensusResult = await awaited(self.handle.consensus.remote(list(texts), threshold), unwrap)
        return result


async def evaluator_generation(manager: Any, handle: Any) -> GenerationService:
    """The router's ``GenerationService``: candidates from the provider manager, scored in the evaluator deployment."""
    evaluator = HandleEvaluator(handle, await handle.info.remote())
    return GenerationService(manager, evaluator, tracker=ProviderQualityTracker())  # type: ignore[arg-type]
