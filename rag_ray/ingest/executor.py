"""How the parse → enrich → embed → write stages run. The Ray Data executor lives in ``jobs/``; this one runs
them in-process (tests, tiny ingests, machines without Ray)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from rag_ray.ingest.rows import CHUNK_COLUMNS, rows_to_columns
from rag_ray.ingest.stages import EmbedChunks, EnrichChunks, ParseAndChunk, WriteChunks

ResultHandler = Callable[[dict[str, list[Any]]], None]


class StageFactories(Protocol):
    """What an executor needs to build the stages (picklable, so Ray workers can build them too)."""

    def parse(self) -> ParseAndChunk: ...

    def enrich(self, level: str | None = None) -> EnrichChunks:
        """The labelling stage at ``level`` (None: the configured default; ``off``: a pass-through)."""
        ...

    def embed(self) -> EmbedChunks: ...

    def write(self) -> WriteChunks: ...


@dataclass(frozen=True)
class LeveledStages:
    """``stages`` with a per-source enrichment level (picklable when ``stages`` is)."""

    stages: StageFactories
    level: str | None = None

    def parse(self) -> ParseAndChunk:
        return self.stages.parse()

    def enrich(self, level: str | None = None) -> EnrichChunks:
        return enrich_stage(self.stages, level or self.level)

    def embed(self) -> EmbedChunks:
        return self.stages.embed()

    def write(self) -> WriteChunks:
        return self.stages.write()


def enrich_stage(stages: StageFactories, level: str | None = None) -> EnrichChunks:
    """``stages.enrich(level)``; factories written before enrichment existed get the default (standard) labels,
    so no ingest path skips the labels the governance policy depends on."""
    factory = getattr(stages, "enrich", None)
    if factory is None:
        return EnrichChunks(level or "standard")
    return factory(level)


class Executor(Protocol):
    def run(self, tasks: list[dict[str, Any]], stages: StageFactories, on_results: ResultHandler,
            checkpoint: Callable[[], None]) -> None: ...


class LocalExecutor:
    """Runs the stages in this process, ``batch_size`` chunks at a time."""

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size

    def run(self, tasks: list[dict[str, Any]], stages: StageFactories, on_results: ResultHandler,
            checkpoint: Callable[[], None]) -> None:
        parse, enrich, embed, write = stages.parse(), enrich_stage(stages), stages.embed(), stages.write()
        for batch in _batched(_flatten(parse, tasks), self.batch_size):
            checkpoint()
            on_results(write(embed(enrich(rows_to_columns(batch, CHUNK_COLUMNS)))))


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
