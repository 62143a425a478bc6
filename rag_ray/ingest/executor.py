"""How the parse → enrich → embed → write stages run. The Ray Data executor lives in ``jobs/``; this one runs
them in-process (tests, tiny ingests, machines without Ray)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from rag_ray.config import Settings
from rag_ray.ingest.batching import BatchPolicy
from rag_ray.ingest.rows import CHUNK_COLUMNS, rows_to_columns
from rag_ray.ingest.scan import order_tasks
from rag_ray.ingest.stages import EmbedChunks, EnrichChunks, ParseAndChunk, WriteChunks

ResultHandler = Callable[[dict[str, list[Any]]], None]
# A task's own estimate of the chunks it will embed, where its planner knows it (a database partition: its rows not
# yet in the store); executors size their embedding pools from it. File tasks are estimated from the files' sizes.
EXPECTED_CHUNKS = "expected_chunks"


@dataclass(frozen=True)
class SharedModel:
    """A job's embedding model as one shared actor can host it for many jobs: ``key`` names the model (jobs on the
    same model share the actor) and ``factories`` build it from settings alone (picklable, no per-job wrappers)."""

    key: str
    factories: StageFactories


class StageFactories(Protocol):
    """What an executor needs to build the stages (picklable, so Ray workers can build them too)."""

    def parse(self) -> ParseAndChunk: ...

    def enrich(self, level: str | None = None) -> EnrichChunks:
        """The labelling stage at ``level`` (None: the configured default; ``off``: a pass-through)."""
        ...

    def embed(self) -> EmbedChunks: ...

    def write(self) -> WriteChunks: ...

    def shared_model(self) -> SharedModel | None:
        """The model as a shared actor can host it, or None when only this job's own ``embed`` can build it."""
        ...


@dataclass(frozen=True)
class LeveledStages:
    """``stages`` with a per-source enrichment level (picklable when ``stages`` is)."""

    stages: StageFactories
    level: str | None = None

    def parse(self) -> ParseAndChunk:
        return self.stages.parse()

    def enrich(self, level: str | None = None) -> EnrichChunks:
        return self.stages.enrich(level or self.level)

    def embed(self) -> EmbedChunks:
        return self.stages.embed()

    def write(self) -> WriteChunks:
        return self.stages.write()

    def shared_model(self) -> SharedModel | None:
        return self.stages.shared_model()


class Executor(Protocol):
    def run(self, tasks: list[dict[str, Any]], stages: StageFactories, on_results: ResultHandler,
            checkpoint: Callable[[], None]) -> None: ...


class LocalExecutor:
    """Runs the stages in this process, ``batch_size`` chunks at a time, files in ``strategy`` order."""

    def __init__(self, batch_size: int = 64, policy: BatchPolicy | None = None, strategy: str = "fifo"):
        self.batch_size = batch_size
        self.policy = policy
        self.strategy = strategy

    @classmethod
    def from_settings(cls, settings: Settings, batch_size: int = 64) -> LocalExecutor:
        return cls(batch_size=batch_size, policy=batch_policy(settings),
                   strategy=settings.ingest_processing_strategy)

    def run(self, tasks: list[dict[str, Any]], stages: StageFactories, on_results: ResultHandler,
            checkpoint: Callable[[], None]) -> None:
        parse, enrich, embed, write = stages.parse(), stages.enrich(), stages.embed(), stages.write()
        if self.policy is not None:
            embed.adapt(self.policy)
        for batch in _batched(_flatten(parse, order_tasks(tasks, self.strategy)), self.batch_size):
            checkpoint()
            on_results(write(embed(enrich(rows_to_columns(batch, CHUNK_COLUMNS)))))


def batch_policy(settings: Settings) -> BatchPolicy:
    """The embedding batch policy of the settings (``RAG_INGEST_*``; ``/extract/filesystem`` batch_config)."""
    memory = settings.ingest_memory_limit_mb * 1024 * 1024 if settings.ingest_memory_limit_mb else None
    return BatchPolicy(size=settings.embedding_batch_size, adaptive=settings.ingest_adaptive_batching,
                       minimum=settings.ingest_batch_min, maximum=settings.ingest_batch_max,
                       memory_limit_bytes=memory)


def _flatten(parse: ParseAndChunk, tasks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for task in tasks:
        yield from parse(task)


def _batched(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
