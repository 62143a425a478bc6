"""The Ray Data executor: parse tasks → enrichment tasks → autoscaled embedding actor pool → batched Milvus
writers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from rag_ray.config import Settings
from rag_ray.ingest.executor import ResultHandler, StageFactories, enrich_stage
from rag_ray.ingest.stages import EmbedChunks, WriteChunks


def init_ray(settings: Settings, **kwargs: Any) -> None:
    """Join ``RAY_ADDRESS`` when configured, else start (or reuse) a local Ray."""
    if ray.is_initialized():
        return
    ray.init(address=settings.ray_address or None, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, configure_logging=True, **kwargs)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own bar from the job's counters
    ctx.print_on_execution_start = False


class _Embed:
    def __init__(self, stages: StageFactories):
        self.stage: EmbedChunks = stages.embed()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.stage(batch)


class _Write:
    def __init__(self, stages: StageFactories):
        self.stage: WriteChunks = stages.write()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.stage(batch)


@dataclass
class RayDataExecutor:
    embed_concurrency: tuple[int, int] = (1, 1)
    embed_batch_size: int = 64
    write_batch_size: int = 256
    files_per_block: int = 8
    enrich_batch_size: int = 256

    @classmethod
    def from_settings(cls, settings: Settings) -> RayDataExecutor:
        return cls(embed_concurrency=(settings.embed_concurrency_min, settings.embed_concurrency_max),
                   embed_batch_size=max(settings.embedding_batch_size, 16) * 4)

    def run(self, tasks: list[dict[str, Any]], stages: StageFactories, on_results: ResultHandler,
            checkpoint: Callable[[], None]) -> None:
        blocks = max(1, min(len(tasks), (len(tasks) + self.files_per_block - 1) // self.files_per_block))
        ds: ray.data.Dataset = ray.data.from_items(tasks, override_num_blocks=blocks)
        ds = ds.flat_map(stages.parse(), num_cpus=0.25)
        # rules only, no model: plain tasks (fusable with the parse step), not an actor pool
        ds = ds.map_batches(enrich_stage(stages), batch_size=self.enrich_batch_size, num_cpus=0.1)
        low, high = self.embed_concurrency
        ds = ds.map_batches(_Embed, fn_constructor_args=(stages,), batch_size=self.embed_batch_size,
                            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=max(low, high)), num_cpus=0.5)
        ds = ds.map_batches(_Write, fn_constructor_args=(stages,), batch_size=self.write_batch_size,
                            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            checkpoint()
            on_results(batch)  # type: ignore[arg-type]  # numpy columns index and zip like the lists
