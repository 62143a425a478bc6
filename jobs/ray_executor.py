"""The Ray Data executor: parse tasks → enrichment tasks → autoscaled embedding actor pool → batched Milvus
writers; small jobs run their stages in the driver instead.

Concurrent jobs must never wait on each other for CPUs. Only the embedding actors hold a CPU reservation for the
life of a pipeline; parse/enrich tasks and the Milvus writer reserve none (their parallelism is capped instead),
so whatever the actors of other jobs hold, every pipeline's tasks can run and the pipelines that have their
embedding actor finish. Admission (``RAG_JOBS_MAX_CONCURRENT``) bounds how many pipelines there are; each gets an
equal share of the cluster's CPUs (Ray Data resource limits, embedding pool size). A job a pipeline could not spread
— at most ``RAG_JOBS_LOCAL_MAX_FILES`` files, or text for one embedding input — skips Ray Data: its driver runs the
stages itself (in a Ray worker, embedding through the shared embedding actor), and a driver not yet in a Ray (the CLI)
does not start one for it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ray

from jobs.ray_logging import bound_ray_logs
from rag_ray.config import Settings
from rag_ray.embedding.local import limit_threads
from rag_ray.ingest.batching import BatchPolicy
from rag_ray.ingest.executor import (
    EXPECTED_CHUNKS,
    LocalExecutor,
    ResultHandler,
    SharedModel,
    StageFactories,
    batch_policy,
)
from rag_ray.ingest.scan import estimated_text_bytes, order_tasks
from rag_ray.ingest.stages import EmbedChunks, EnrichChunks, ParseAndChunk, WriteChunks

log = logging.getLogger(__name__)


# Ray's messages when a new local node misses a startup wait: the raylet registering (30 s), the GCS binding its port
STARTUP_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")
# On a machine just started, one start missed the GCS's port wait and the start after it the raylet's registration
# (neither process wrote a log); a start minutes later took 2 s. Each start costs at most the two waits, 90 s.
STARTUP_ATTEMPTS = 3


# Ray keeps at most as many idle workers as the node has CPUs, actors included, and kills the rest after a second
# idle. A pipeline's parse/enrich tasks reserve no CPU, so beside its actors their workers were killed after each
# task and started again: 82 worker starts (each importing the stages) in a 2,084-chunk job on two 1-CPU raylets,
# 205 s; with headroom for a pipeline's actors and tasks, 12 starts and 102 s (bench/scaleout.py). A cluster's nodes
# read it from their environment (cluster.yaml); an operator's value wins.
WORKER_SOFT_LIMIT_ENV = "RAY_num_workers_soft_limit"
WORKER_HEADROOM = 8  # embedding + writer actors, two parse/enrich task workers, Ray Data's four helper actors


# Serve's controller reconciles every deployment 10 times a second by default: 0.057 cores of an idle 2-core server
# (0.21 in all), 0.055 under load. Twice a second it keeps 0.022, and nothing it drives is that quick anyway (health
# checks every 10 s, autoscaling over 30 s windows, a replica's start in seconds). An operator's value wins.
SERVE_CONTROL_LOOP_ENV = "RAY_SERVE_CONTROL_LOOP_INTERVAL_S"
SERVE_CONTROL_LOOP_INTERVAL_S = 0.5
# Every Serve replica and handle hands its cached request metrics to Ray's metrics API every 100 ms by default, while
# Ray exports them every 10 s (metrics_report_interval_ms): once a second loses nothing a scrape can see. An idle
# 2-core server: 0.137 → 0.124 cores (each replica 0.009 → 0.007). Needed on every node; an operator's value wins.
SERVE_METRICS_EXPORT_ENV = "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS"
SERVE_METRICS_EXPORT_INTERVAL_MS = 1000
# the Serve knobs a local Ray gets from init_ray (cluster.yaml and the KubeRay pods set the same on their nodes)
SERVE_ENV = {SERVE_CONTROL_LOOP_ENV: str(SERVE_CONTROL_LOOP_INTERVAL_S),
             SERVE_METRICS_EXPORT_ENV: str(SERVE_METRICS_EXPORT_INTERVAL_MS)}


def worker_soft_limit(cpus: int) -> int:
    """Idle workers a node keeps: Ray's default (its CPUs) plus room for one pipeline's actors and task workers."""
    return cpus + WORKER_HEADROOM


def init_ray(settings: Settings, **kwargs: Any) -> None:
    """Join ``RAY_ADDRESS`` when configured, else start (or reuse) a local Ray. Logs stay bounded either way
    (``jobs.ray_logging``), also in a job driver that runs inside an already initialised Ray worker."""
    bound_ray_logs()
    # a local head's GCS gets 30 s to bind its port; the first start on a machine just started missed that (the GCS
    # never wrote a log; the disk reads fast, the cause is unknown). Ray's own override: an operator's value wins.
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "60")
    os.environ.setdefault(WORKER_SOFT_LIMIT_ENV, str(worker_soft_limit(os.cpu_count() or 1)))
    for variable, value in SERVE_ENV.items():
        os.environ.setdefault(variable, value)
    if not ray.is_initialized():
        options = {"address": settings.ray_address or None, "include_dashboard": False,
                   "logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True, **kwargs}
        start_local_ray(options)
    quiet_ray_data()


def start_local_ray(options: dict[str, Any]) -> None:
    """``ray.init``, started again (up to ``STARTUP_ATTEMPTS`` in all) when the new node missed a startup wait: a
    local raylet gets a fixed 30 s to register, the GCS a bounded wait to bind its port (above). The half-started node
    is torn down first. Any other error is the caller's."""
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        try:
            ray.init(**options)
            return
        except Exception as exc:  # Ray raises a bare Exception for the raylet's timeout
            if attempt == STARTUP_ATTEMPTS or not any(timeout in str(exc) for timeout in STARTUP_TIMEOUTS):
                raise
            log.warning("local Ray missed a startup wait (%s); starting it again (%d of %d)", exc, attempt + 1,
                        STARTUP_ATTEMPTS)
            ray.shutdown()


def quiet_ray_data() -> None:
    logging.getLogger("ray.data").setLevel(os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING"))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own bar from the job's counters
    # ... so Ray Data's "Progress bars disabled" warning, printed once per process, only tells the user our choice
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx.print_on_execution_start = False
    ctx.execution_options.verbose_progress = False


class _Embed:
    def __init__(self, stages: StageFactories, policy: BatchPolicy, threads: int):
        self.stage: EmbedChunks = stages.embed().adapt(policy)
        limit_threads(threads)  # as many model threads as CPUs reserved: actors scale out, not oversubscribe

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.stage(batch)


class _Write:
    def __init__(self, stages: StageFactories):
        self.stage: WriteChunks = stages.write()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.stage(batch)


@dataclass(frozen=True)
class PoolPlan:
    """The embedding actor pool of one pipeline: autoscaled between ``low`` and ``high`` actors, each reserving
    ``cpus`` and running the model on ``threads`` threads."""

    low: int
    high: int
    cpus: float
    threads: int


@dataclass
class RayDataExecutor:
    embed_concurrency: tuple[int, int] = (1, 0)  # (min, max) actors; max 0: derived from the cluster's CPUs
    embed_batch_size: int = 256  # chunks per call of an embedding actor (the model's batch size is the policy's)
    write_batch_size: int = 512
    files_per_block: int = 8
    enrich_batch_size: int = 256
    local_max_files: int = 0  # file jobs this small run in the driver (LocalExecutor), not on Ray Data
    max_concurrent_jobs: int = 1  # pipelines that may run at once (RAG_JOBS_MAX_CONCURRENT): each gets a share
    actor_cpus: float = 1.0  # CPUs (= model threads) of one embedding actor (RAG_EMBED_ACTOR_CPUS)
    parse_concurrency: int = 2  # parse/enrich tasks at once per job (they reserve no CPU)
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    strategy: str = "fifo"  # the order files are processed in (rag_ray.ingest.scan.order_tasks)
    chunk_stride: int = 700  # new characters per chunk (chunk size - overlap): sizes a file job's embedding work
    connect: Callable[[], None] = field(default=lambda: None, repr=False)  # joins or starts Ray before a pipeline
    join_for_local: bool = False  # a configured cluster (RAY_ADDRESS) embeds driver-run jobs in its shared actor

    @classmethod
    def from_settings(cls, settings: Settings) -> RayDataExecutor:
        policy = batch_policy(settings)
        return cls(embed_concurrency=(settings.embed_concurrency_min, settings.embed_concurrency_max),
                   embed_batch_size=max(256, policy.maximum if policy.adaptive else policy.size),
                   local_max_files=settings.jobs_local_max_files,
                   max_concurrent_jobs=settings.jobs_max_concurrent, actor_cpus=settings.embed_actor_cpus,
                   policy=policy, strategy=settings.ingest_processing_strategy,
                   chunk_stride=settings.chunk_size - settings.chunk_overlap, connect=partial(init_ray, settings),
                   join_for_local=bool(settings.ray_address))

    def run(self, tasks: list[dict[str, Any]], stages: StageFactories, on_results: ResultHandler,
            checkpoint: Callable[[], None]) -> None:
        tasks = order_tasks(tasks, self.strategy)
        if self.runs_locally(tasks):
            if self.join_for_local:
                self.connect()
            LocalExecutor(batch_size=self.embed_batch_size, policy=self.policy).run(
                tasks, SharedModelStages(stages), on_results, checkpoint)
            return
        self.connect()
        share = self.cpu_share()
        blocks = self.blocks(tasks)
        pool = self.pool_plan(share, float(ray.cluster_resources().get("CPU", 1.0)), self.embed_inputs(tasks, blocks))
        ds: ray.data.Dataset = ray.data.from_items(tasks, override_num_blocks=blocks)
        parse_pool = ray.data.TaskPoolStrategy(size=min(self.parse_concurrency, blocks))  # no idle task slots
        ds = ds.flat_map(stages.parse(), num_cpus=0, compute=parse_pool)
        # rules only, no model: plain tasks (fusable with the parse step), not an actor pool
        ds = ds.map_batches(stages.enrich(), batch_size=self.enrich_batch_size, num_cpus=0, compute=parse_pool)
        ds = ds.map_batches(_Embed, fn_constructor_args=(stages, self.policy, pool.threads),
                            batch_size=self.embed_batch_size, num_cpus=pool.cpus,
                            compute=ray.data.ActorPoolStrategy(min_size=pool.low, max_size=pool.high))
        # Milvus upserts wait on the network: no CPU reservation that could starve another job's embedding actor
        ds = ds.map_batches(_Write, fn_constructor_args=(stages,), batch_size=self.write_batch_size,
                            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0)
        options = ds.context.execution_options
        options.resource_limits = self.resource_limits(share)
        options.preserve_order = self.strategy != "fifo"  # the chosen order is the order results arrive in
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            checkpoint()
            on_results(batch)  # type: ignore[arg-type]  # numpy columns index and zip like the lists

    def blocks(self, tasks: list[dict[str, Any]]) -> int:
        return max(1, min(len(tasks), (len(tasks) + self.files_per_block - 1) // self.files_per_block))

    def embed_inputs(self, tasks: list[dict[str, Any]], blocks: int) -> int:
        """How many inputs the embedding step will receive: Ray Data hands it bundles of whole blocks holding at least
        ``embed_batch_size`` chunks, so about the job's chunks ÷ that, rounded down (a remainder joins the last
        bundle), at most one per block and at least one. Files: their text (``estimated_text_bytes``) in chunks of
        ``chunk_stride``; database partitions: the chunks they expect (``EXPECTED_CHUNKS``, one batch where a task
        does not say)."""
        chunks = (sum(estimated_text_bytes(task["path"]) for task in tasks) / self.chunk_stride if _is_file_job(tasks)
                  else sum(float(task.get(EXPECTED_CHUNKS, self.embed_batch_size)) for task in tasks))
        return max(1, min(blocks, math.floor(chunks / self.embed_batch_size)))

    def pool_plan(self, share: float, cluster_cpus: float, inputs: int = 1) -> PoolPlan:
        """Between the configured minimum and a maximum of one actor per ``actor_cpus`` of the cluster (or the
        configured maximum). At full size the pool reserves this job's ``share`` of the CPUs, so concurrent jobs'
        pools always fit; each actor still runs ``actor_cpus`` threads.

        The pool starts with, and keeps until its input is consumed, as many actors as the embedding step has
        ``inputs`` (batches) to keep busy (up to the maximum, at least the configured minimum). Every actor loads
        the model (~20 s on a busy core): grown from one on demand, the second actor started late, and Ray Data's
        utilisation-based downscaling then released and reloaded it every ~40 s of a 2,600-chunk job
        (bench/scaleout.py: two nodes slower than one); a second actor for a job of one batch only loads a model
        (bench/ingest.py, 40 documents: 13.5 s → 11.9 s with one). Ray Data releases the pool when the input is
        done."""
        low, high = self.embed_concurrency
        high = high or max(1, math.floor(cluster_cpus / self.actor_cpus))
        low = max(min(low, high), min(high, inputs))
        cpus = round(min(self.actor_cpus, share / high), 3)
        return PoolPlan(low, high, cpus, max(1, round(self.actor_cpus)))

    def resource_limits(self, share: float) -> ray.data.ExecutionResources:
        """This job's share of the CPUs and, with a memory budget (batch_config.memory_limit_mb), of the object
        store: Ray Data back-pressures its operators to stay within both. ``for_limits``: a field left out is no
        limit (the constructor's 0 would leave Ray Data no object store budget at all)."""
        return ray.data.ExecutionResources.for_limits(cpu=share, object_store_memory=self.policy.memory_limit_bytes)

    def runs_locally(self, tasks: list[dict[str, Any]]) -> bool:
        """A file job of at most ``local_max_files`` files, or whose embedding step would get one input (one actor:
        a pipeline would add only its start-up — bench/small_ingest.py: the README's ingest, 311 chunks, 53.6 s on
        Ray Data, 35.1 s in the driver). ``local_max_files`` 0: always a pipeline; database rows always go to one."""
        if not (tasks and self.local_max_files and _is_file_job(tasks)):
            return False
        return len(tasks) <= self.local_max_files or self.embed_inputs(tasks, self.blocks(tasks)) == 1

    def cpu_share(self) -> float:
        """This job's share of the cluster's CPUs (at least a fraction of one embedding actor's worth)."""
        total = float(ray.cluster_resources().get("CPU", 1.0))
        return max(total / max(1, self.max_concurrent_jobs), 0.2)


def _is_file_job(tasks: list[dict[str, Any]]) -> bool:
    """Files only (database partitions carry no ``path``)."""
    return all("path" in task for task in tasks)


EMBEDDER_NAMESPACE = "rag-ray"
EMBEDDER_IDLE_S = 600.0  # the shared embedding actor exits after this long without work


class SharedModelStages:
    """``stages`` whose embedding runs in the cluster's shared embedding actor for the configured model: one
    model load for all small jobs, whichever worker drives them, and one embedding at a time (on a small node
    concurrent encodes only compete for the same cores). Falls back to the job's own model if the actor cannot
    be reached."""

    def __init__(self, stages: StageFactories):
        self.stages = stages

    def parse(self) -> ParseAndChunk:
        return self.stages.parse()

    def enrich(self, level: str | None = None) -> EnrichChunks:
        return self.stages.enrich(level)

    def write(self) -> WriteChunks:
        return self.stages.write()

    def embed(self) -> EmbedChunks:
        model = self.stages.shared_model()
        if model is None or not ray.is_initialized():
            return self.stages.embed()
        return _RemoteEmbed(model)  # the actor outlives this job: it gets none of the job's wrappers

    def shared_model(self) -> SharedModel | None:
        return self.stages.shared_model()


class SharedEmbedder:
    """One embedding model for the small jobs of a cluster (a detached named actor; exits when idle)."""

    def __init__(self, stages: StageFactories, idle_s: float):
        self.stage = stages.embed()
        self.idle_s = idle_s
        self.last_used = time.monotonic()
        self.busy = 0
        self.lock = threading.Lock()  # one encode at a time; the second concurrency slot answers `ready`
        threading.Thread(target=self._exit_when_idle, daemon=True).start()

    def ready(self) -> bool:
        return True

    def embed(self, batch: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.busy += 1
            try:
                return self.stage(batch)
            finally:
                self.busy -= 1
                self.last_used = time.monotonic()

    def _exit_when_idle(self) -> None:
        while True:
            time.sleep(min(30.0, self.idle_s / 4))
            if not self.busy and time.monotonic() - self.last_used > self.idle_s:
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return


class _RemoteEmbed(EmbedChunks):
    def __init__(self, model: SharedModel):  # no super().__init__: the model lives in the actor
        self.stages, self.name = model.factories, f"rag-embed-{model.key[:16]}"
        self.actor = self._actor()

    def _actor(self) -> Any:
        actor_class: Any = ray.remote(SharedEmbedder)
        return actor_class.options(
            name=self.name, namespace=EMBEDDER_NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=0,
            num_cpus=0, max_concurrency=2, runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
        ).remote(self.stages, EMBEDDER_IDLE_S)

    def adapt(self, policy: BatchPolicy) -> EmbedChunks:
        return self  # the shared model serves many small jobs at its own batch size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = ray.get(self.actor.embed.remote(batch))
        except ray.exceptions.RayActorError:  # it exited when idle just now: start it again, once
            self.actor = self._actor()
            result = ray.get(self.actor.embed.remote(batch))
        return result
