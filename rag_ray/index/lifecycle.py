"""Index lifecycle: rebuild into a new collection while the live one keeps answering, switch the alias behind an
evaluation gate, roll back, drop old collections on request.

``RAG_COLLECTION`` names a Milvus alias; the collections behind it are ``<alias>__<model slug>__<n>``. An install
from before aliases (``RAG_COLLECTION`` is a collection) is adopted by its first rebuild: the collection is renamed
``<alias>__<model slug>__1`` and the alias created pointing at it.

Consistency: a rebuild is a sync from nothing (``rag_ray.index.sync``); ``switch`` syncs the candidate again just
before moving the alias (writes made during the rebuild and the evaluation reach it), and refuses while ingest jobs
are open (they embed with the live model; ``--force`` skips this and the gate). After a switch the previous
collection stays as the rollback target and ``rollback`` syncs it first, so writes made after the switch survive a
rollback. The server follows the alias (``rag_ray.index.live``); the configured ``EMBEDDING_*`` must then name the
new model before the next start (the startup check refuses a mismatch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from rag_ray.config import Settings
from rag_ray.embedding import EMBEDDERS, create_embedder, load_providers
from rag_ray.embedding.backends import ThreadedBackend
from rag_ray.embedding.base import Embedder
from rag_ray.errors import Conflict, InvalidInput, NotFound
from rag_ray.index.catalog import IndexCatalog, connect_client
from rag_ray.index.gate import EvalGate, GateFailed, GateResult
from rag_ray.index.records import (
    BUILDING,
    CANCELLED,
    DROPPED,
    FAILED,
    LIVE,
    MODE_ADOPTED,
    MODE_RECHUNK,
    MODE_REEMBED,
    READY,
    STANDBY,
    IndexEntry,
    IndexRegistry,
    utcnow,
)
from rag_ray.index.sync import Materializer, Rechunk, SyncStats, apply_sync, copy_fields, plan_sync, scan_fingerprints
from rag_ray.ingest.admission import JobQueue, run_admitted
from rag_ray.ingest.file_jobs import Launcher
from rag_ray.ingest.tracking import OPEN, JobLimits, JobStore, JobTracker, ProgressListener, run_tracked
from rag_ray.metadata import JobRecord, MetadataDB
from rag_ray.retrieval.search import fusion_from_settings, options_from_settings, reranker_from_settings
from rag_ray.retrieval.service import RetrievalService
from rag_ray.store.milvus import ChunkStore
from rag_ray.text.chunking import validate_chunking

log = logging.getLogger(__name__)
JOB_KIND = "index_rebuild"
REUSABLE = (READY, FAILED, CANCELLED, STANDBY)  # a rebuild with the same recipe continues into these

EmbedderFactory = Callable[[str, str], Embedder]  # (provider, model) → embedder


def split_model_id(model_id: str) -> tuple[str, str]:
    """``provider:model`` of a registered embedding provider → (provider, model); InvalidInput naming ``embedding``."""
    provider, sep, model = model_id.partition(":")
    provider = provider.strip().lower()
    if not sep or not provider or not model.strip():
        raise InvalidInput(f"expected PROVIDER:MODEL, got {model_id!r}", field="embedding")
    load_providers()
    if provider not in EMBEDDERS.names():
        raise InvalidInput(f"unknown embedding provider {provider!r} (known: {', '.join(EMBEDDERS.names())})",
                           field="embedding")
    return provider, model.strip()


@dataclass
class RebuildRequest:
    embedding: str | None = None  # provider:model; None: the live collection's model (a re-chunk, or a refresh)
    chunk_size: int | None = None  # None: the live collection's
    chunk_overlap: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"embedding": self.embedding, "chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap}


@dataclass
class RebuildSummary:
    job_id: str
    status: str
    collection: str = ""
    embedding_model: str = ""
    dimension: int = 0
    mode: str = ""
    live: str = ""
    docs_live: int = 0
    docs_synced: int = 0
    docs_removed: int = 0
    chunks_written: int = 0
    docs_from_source: int = 0
    docs_carried: int = 0
    notes: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SwitchResult:
    live: str
    previous: str
    embedding_model: str
    dimension: int
    chunk_size: int | None
    chunk_overlap: int | None
    synced: dict[str, int]
    gate: GateResult | None = None
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "gate"}
        data["gate"] = self.gate.to_dict() if self.gate else None
        return data

    def config_hint(self) -> str:
        provider, model = split_model_id(self.embedding_model)
        hint = f"EMBEDDING_PROVIDER={provider} EMBEDDING_MODEL={model}"
        if self.chunk_size is not None:
            hint += f" RAG_CHUNK_SIZE={self.chunk_size} RAG_CHUNK_OVERLAP={self.chunk_overlap}"
        return hint


@dataclass(frozen=True)
class IndexStatus:
    """``index list``: a registered collection with what Milvus says about it now."""

    entry: IndexEntry
    live: bool
    exists: bool
    rows: int | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.entry.to_dict(), "live": self.live, "exists": self.exists, "rows": self.rows}


class IndexLifecycle:
    """The lifecycle of the collections behind ``settings.collection``. ``embedders`` builds an embedder for a
    model (default: the registry); embedders are built once per model and reused."""

    def __init__(self, settings: Settings, db: MetadataDB, client: Any = None, *,
                 embedders: EmbedderFactory | None = None, jobs: JobStore | None = None):
        self.settings = settings
        self.db = db
        self.alias = settings.collection
        self._client = client
        self._factory = embedders or (lambda p, m: create_embedder(settings, provider=p, model=m))
        self._embedders: dict[str, Embedder] = {}
        self.registry = IndexRegistry(db)
        self.jobs = jobs or JobStore(db, JobLimits.from_settings(settings))

    @property
    def catalog(self) -> IndexCatalog:
        if self._client is None:  # connect on first use: building the service must not need Milvus
            self._client = connect_client(self.settings)
        return IndexCatalog(self._client, self.alias)

    # ---- models ----
    def embedder(self, model_id: str) -> Embedder:
        key = model_id.lower()
        if key not in self._embedders:
            built = self._factory(*split_model_id(model_id))
            self._embedders[key] = built
            self._embedders.setdefault(f"{built.provider}:{built.model}".lower(), built)
        return self._embedders[key]

    def canonical(self, model_id: str) -> str:
        built = self.embedder(model_id)
        return f"{built.provider}:{built.model}"

    # ---- the live collection ----
    def ensure_alias(self) -> IndexEntry:
        """The live collection's registry entry; adopts an install from before aliases and registers a live
        collection created by ingest (recording its model and chunking)."""
        catalog = self.catalog
        name = catalog.live_name()
        if name is None:
            if not catalog.is_plain_collection(self.alias):
                raise NotFound(f"nothing to rebuild: neither a collection nor an alias called {self.alias!r} "
                               "exists (ingest something first)", field="collection")
            name = self._adopt(catalog)
        entry = self.registry.get(name)
        if entry is not None and entry.status == LIVE:
            return entry
        return self._register_live(name)

    def _adopt(self, catalog: IndexCatalog) -> str:
        info = catalog.info(self.alias)
        model = info.embedding_model or self._configured_model(info.dimension)
        name = catalog.next_name(model or "legacy", [e.name for e in self.registry.list(self.alias)])
        if info.embedding_model is None and model is not None:  # what the startup check would record anyway
            catalog.open(self.alias, info.dimension).record_embedding_model(model)
        catalog.record_chunking(self.alias, self.settings.chunk_size, self.settings.chunk_overlap)
        catalog.adopt(name)
        log.warning("adopted collection %r as %r behind the alias %r", self.alias, name, self.alias)
        return name

    def _configured_model(self, dimension: int) -> str | None:
        """The configured model's id when it has ``dimension`` (what the server's startup check would record)."""
        from rag_ray.runtime import embedding_dimension

        try:
            configured_dimension = embedding_dimension(self.settings)  # known models: without loading them
        except Exception:  # the configured model cannot be built here: leave the collection's model unrecorded
            return None
        settings = self.settings
        return f"{settings.embedding_provider.lower()}:{settings.embedding_model}" \
            if configured_dimension == dimension else None

    def _register_live(self, name: str) -> IndexEntry:
        info = self.catalog.info(name)
        chunk_size = info.chunk_size or self.settings.chunk_size
        overlap = info.chunk_overlap if info.chunk_size else self.settings.chunk_overlap
        model = info.embedding_model or self._configured_model(info.dimension) or "unknown:unknown"
        existing = self.registry.get(name)
        self.registry.register(name, self.alias, embedding_model=model, dimension=info.dimension,
                               chunk_size=chunk_size, chunk_overlap=overlap,
                               mode=existing.mode if existing else MODE_ADOPTED, status=LIVE,
                               job_id=existing.job_id if existing else None)
        self.registry.replace_doc_states(name, {})
        return self.registry.require(name)

    def live(self) -> IndexEntry:
        return self.ensure_alias()

    def statuses(self) -> list[IndexStatus]:
        catalog = self.catalog
        live_name = catalog.live_name()
        present = set(catalog.family())
        out = []
        for entry in self.registry.list(self.alias):
            exists = entry.name in present
            rows = catalog.info(entry.name).rows if exists else None
            out.append(IndexStatus(entry, entry.name == live_name, exists, rows))
        registered = {s.entry.name for s in out}
        for name in sorted(present - registered):  # made outside the lifecycle (or before it): shown, unmanaged
            info = catalog.info(name)
            entry = IndexEntry(name, self.alias, info.embedding_model or "", info.dimension, info.chunk_size,
                               info.chunk_overlap, "unmanaged", LIVE if name == live_name else "unregistered", None,
                               None, "", None, None, None)
            out.append(IndexStatus(entry, name == live_name, True, info.rows))
        return out

    def store(self, entry: IndexEntry) -> ChunkStore:
        return self.catalog.open(entry.name, entry.dimension, entry.embedding_model)

    # ---- rebuild ----
    def submit(self, request: RebuildRequest, created_by: str = "system") -> str:
        """Check the request, record the job (queued); ``rebuild(request, job_id)`` runs it."""
        self._recipe(request, self.ensure_alias(), canonical=False)  # the job loads the model
        return self.jobs.create(JOB_KIND, request.describe(), created_by=created_by)

    def rebuild(self, request: RebuildRequest, job_id: str | None = None,
                listeners: list[ProgressListener] | None = None, created_by: str = "system") -> RebuildSummary:
        """Build (or bring up to date) the collection for ``request`` as job ``job_id`` (created when None)."""
        job_id = job_id or self.submit(request, created_by)
        tracker = JobTracker(self.jobs, job_id, listeners)
        summary = RebuildSummary(job_id=job_id, status="running")
        target: list[IndexEntry] = []
        try:
            run_tracked(tracker, summary, lambda: self._rebuild(request, job_id, tracker, summary, target),
                        lambda: _message(summary))
        finally:
            if target:
                status = READY if summary.status == "succeeded" else (
                    CANCELLED if summary.status == "cancelled" else FAILED)
                self.registry.update(target[0].name, status=status, message=tracker.progress.message or "")
        return summary

    def _rebuild(self, request: RebuildRequest, job_id: str, tracker: JobTracker, summary: RebuildSummary,
                 out: list[IndexEntry]) -> None:
        live = self.ensure_alias()
        model, chunk_size, overlap = self._recipe(request, live)
        target = self._prepare(live, model, chunk_size, overlap, job_id)
        out.append(target)
        summary.collection, summary.embedding_model, summary.dimension = target.name, model, target.dimension
        summary.mode, summary.live = target.mode, live.name
        live_store, target_store = self.store(live), self.store(target)
        plan = plan_sync(live_store, self.registry.doc_states(target.name))
        summary.docs_live = plan.live_docs
        tracker.start(plan.live_docs + len(plan.removed), skipped=plan.live_docs - len(plan.changed))
        stats = apply_sync(plan, self._materializer(target, live_store, target_store), self.registry, target.name,
                           progress=lambda docs, chunks: tracker.add(items=docs, chunks=chunks),
                           checkpoint=tracker.checkpoint)
        self.registry.update(target.name, synced_at=utcnow())
        _fill(summary, stats)

    def _recipe(self, request: RebuildRequest, live: IndexEntry, *, canonical: bool = True) -> tuple[str, int, int]:
        """(model id, chunk size, overlap) of the collection ``request`` asks for; ``canonical``: the model id as its
        embedder names itself (loads the model)."""
        model = request.embedding or live.embedding_model
        split_model_id(model)
        if canonical:
            model = self.canonical(model)
        chunk_size = request.chunk_size or live.chunk_size or self.settings.chunk_size
        default_overlap = live.chunk_overlap if chunk_size == live.chunk_size else self.settings.chunk_overlap
        overlap = request.chunk_overlap if request.chunk_overlap is not None else default_overlap
        if overlap is None:
            overlap = min(self.settings.chunk_overlap, chunk_size // 4)
        validate_chunking(chunk_size, overlap)
        return model, chunk_size, overlap

    def _prepare(self, live: IndexEntry, model: str, chunk_size: int, overlap: int, job_id: str) -> IndexEntry:
        """The collection this rebuild fills: an earlier one with the same recipe, else a new one."""
        rechunk = (chunk_size, overlap) != (live.chunk_size, live.chunk_overlap)
        same = [e for e in self.registry.list(self.alias)
                if e.name != live.name and e.embedding_model.lower() == model.lower()
                and (e.chunk_size, e.chunk_overlap) == (chunk_size, overlap)]
        for entry in same:
            if entry.status == BUILDING and entry.job_id and entry.job_id != job_id and self._job_open(entry.job_id):
                raise Conflict(f"collection {entry.name!r} is being built by job {entry.job_id}", field="embedding")
        reusable = [e for e in same if e.status in (*REUSABLE, BUILDING) and self.catalog.exists(e.name)]
        taken = [e.name for e in self.registry.list(self.alias)]
        name = reusable[-1].name if reusable else self.catalog.next_name(model, taken)
        if not reusable:
            self.registry.replace_doc_states(name, {})
        dimension = self.embedder(model).dimension
        self.catalog.open(name, dimension, model)
        self.catalog.record_chunking(name, chunk_size, overlap)
        self.registry.register(name, self.alias, embedding_model=model, dimension=dimension, chunk_size=chunk_size,
                               chunk_overlap=overlap, mode=MODE_RECHUNK if rechunk else MODE_REEMBED, status=BUILDING,
                               job_id=job_id)
        return self.registry.require(name)

    def _materializer(self, target: IndexEntry, live_store: ChunkStore, target_store: ChunkStore) -> Materializer:
        live = self.registry.require(self.catalog.live_name() or live_store.collection)
        rechunk = None
        if (target.chunk_size, target.chunk_overlap) != (live.chunk_size, live.chunk_overlap) and target.chunk_size:
            rechunk = Rechunk(target.chunk_size, target.chunk_overlap or 0, self.settings.enrichment_level,
                              self.settings.max_file_bytes)
        fields = copy_fields(self.catalog.fields(live_store.collection), self.catalog.fields(target_store.collection))
        return Materializer(live_store, target_store, self.embedder(target.embedding_model), copy_fields=fields,
                            db=self.db, rechunk=rechunk)

    def sync(self, name: str) -> SyncStats:
        """Bring collection ``name`` (not live) up to date with the live one."""
        target = self.registry.require(name)
        live = self.live()
        if target.name == live.name:
            raise Conflict(f"collection {name!r} is live", field="name")
        live_store, target_store = self.store(live), self.store(target)
        plan = plan_sync(live_store, self.registry.doc_states(name))
        stats = apply_sync(plan, self._materializer(target, live_store, target_store), self.registry, name)
        self.registry.update(name, synced_at=utcnow())
        return stats

    # ---- switch, rollback, drop ----
    def candidate(self, name: str | None = None) -> IndexEntry:
        if name:
            return self.registry.require(name)
        ready = [e for e in self.registry.list(self.alias) if e.status == READY]
        if not ready:
            raise NotFound("no rebuilt collection is ready to switch to (`rag-cli index rebuild` first; "
                           "`rag-cli index list` shows them)", field="name")
        return max(ready, key=lambda e: e.synced_at or e.created_at or utcnow())

    def switch(self, name: str | None = None, *, gate: EvalGate | None = None, force: bool = False) -> SwitchResult:
        """Move the alias to ``name`` (default: the newest ready collection) when ``gate`` passes; ``force`` skips
        the gate and the open-jobs check."""
        live = self.live()
        target = self.candidate(name)
        self._check_switchable(target, live)
        if not force:
            self._check_no_writers()
        synced = self.sync(target.name)
        result: GateResult | None = None
        if not force:
            if gate is None:
                raise InvalidInput("switching needs an evaluation gate (an eval set) or force", field="force")
            result = gate.run(self.retrieval(live), self.retrieval(target), (live.name, target.name))
            if not result.passed:
                raise GateFailed(result.summary(), field="gate", details=result.to_dict())
            synced.merge(self.sync(target.name))  # writes made while the gate ran
        self._flip(target, live, record_previous=True)
        return _switched(target, live, synced, result, force)

    def rollback(self, *, force: bool = False) -> SwitchResult:
        """Move the alias back to the collection that was live before the current one (synced first); refused while
        ingest jobs are open unless ``force``."""
        live = self.live()
        if not live.previous:
            raise NotFound(f"nothing to roll back to: {live.name!r} has no previous collection", field="previous")
        target = self.registry.require(live.previous)
        self._check_switchable(target, live)
        if not force:
            self._check_no_writers()
        synced = self.sync(target.name)
        self._flip(target, live, record_previous=False)
        return _switched(target, live, synced, None, force)

    def _check_switchable(self, target: IndexEntry, live: IndexEntry) -> None:
        if target.name == live.name:
            raise Conflict(f"collection {target.name!r} is already live", field="name")
        if target.status not in (READY, STANDBY):
            raise Conflict(f"collection {target.name!r} is {target.status}; only a ready or standby collection can "
                           "go live", field="name")
        if not self.catalog.exists(target.name):
            raise NotFound(f"collection {target.name!r} no longer exists in Milvus", field="name")

    def _check_no_writers(self) -> None:
        with self.db.session() as s:
            writers = list(s.scalars(select(JobRecord.job_id).where(JobRecord.status.in_(OPEN),
                                                                    JobRecord.kind != JOB_KIND)))
        if writers:
            raise Conflict(f"ingest jobs are open ({', '.join(writers[:5])}): they embed with the live model; wait "
                           "for them (or cancel them), or --force", field="jobs")

    def _flip(self, target: IndexEntry, live: IndexEntry, *, record_previous: bool) -> None:
        self.catalog.point_alias(target.name)
        updates: dict[str, Any] = {"status": LIVE, "switched_at": utcnow()}
        if record_previous:
            updates["previous"] = live.name
        self.registry.update(target.name, **updates)
        self.registry.update(live.name, status=STANDBY)
        # the old live collection is the rollback target: it holds what the new live one holds now
        self.registry.replace_doc_states(live.name, scan_fingerprints(self.store(target)))
        self.registry.replace_doc_states(target.name, {})
        log.warning("index switch: alias %r now points at %r (was %r)", self.alias, target.name, live.name)

    def drop(self, name: str) -> None:
        """Drop a collection of this alias that is not live (a running build of it is cancelled first)."""
        catalog = self.catalog
        entry = self.registry.get(name)
        if entry is None and name not in catalog.family():
            raise NotFound(f"{name!r} is not a collection of the alias {self.alias!r}", field="name")
        if entry is not None and entry.status == BUILDING and entry.job_id and self._job_open(entry.job_id):
            raise Conflict(f"collection {name!r} is being built by job {entry.job_id}; cancel it first", field="name")
        if catalog.exists(name):
            catalog.drop(name)
        if entry is not None:
            self.registry.update(name, status=DROPPED)
            self.registry.replace_doc_states(name, {})

    def _job_open(self, job_id: str) -> bool:
        try:
            return self.jobs.status(job_id) in OPEN
        except NotFound:
            return False

    # ---- evaluation ----
    def retrieval(self, entry: IndexEntry) -> RetrievalService:
        """The server's retrieval pipeline over collection ``entry`` with its own model."""
        return eval_retrieval(self.settings, self.store(entry), self.embedder(entry.embedding_model))


def eval_retrieval(settings: Settings, store: ChunkStore, embedder: Embedder) -> RetrievalService:
    """What evaluations search through: the server's pipeline (fusion, reranker, search options) over ``store`` with
    ``embedder``, without the governance policy (evaluations search as an admin: the whole collection)."""
    return RetrievalService(store, ThreadedBackend(embedder), max_k=settings.max_k,
                            fusion=fusion_from_settings(settings), reranker=reranker_from_settings(settings),
                            options=options_from_settings(settings))


def _fill(summary: RebuildSummary, stats: SyncStats) -> None:
    summary.docs_synced, summary.docs_removed, summary.chunks_written = stats.docs, stats.removed, stats.chunks
    summary.docs_from_source, summary.docs_carried, summary.notes = stats.from_source, stats.carried, stats.notes


def _switched(target: IndexEntry, live: IndexEntry, synced: SyncStats, gate: GateResult | None,
              forced: bool) -> SwitchResult:
    return SwitchResult(live=target.name, previous=live.name, embedding_model=target.embedding_model,
                        dimension=target.dimension, chunk_size=target.chunk_size, chunk_overlap=target.chunk_overlap,
                        synced={"docs": synced.docs, "removed": synced.removed, "chunks": synced.chunks}, gate=gate,
                        forced=forced)


def _message(summary: RebuildSummary) -> str:
    return (f"{summary.collection}: {summary.docs_synced} documents ({summary.chunks_written} chunks) embedded with "
            f"{summary.embedding_model}, {summary.docs_removed} removed, {summary.docs_live} live documents")


def run_rebuild_job(settings: Settings, request: RebuildRequest, job_id: str) -> dict[str, Any]:
    """A background rebuild's body (``IndexService`` launches it through the platform): its own connections."""
    db = MetadataDB.from_settings(settings)
    try:
        return IndexLifecycle(settings, db).rebuild(request, job_id).to_dict()
    finally:
        db.dispose()


RebuildRunner = Callable[[Settings, RebuildRequest, str], Any]


class IndexService:
    """What the admin API uses: the lifecycle over the server's connections; rebuilds run as background jobs
    (queued for admission like ingest jobs, launched through the platform: a thread, or a Ray task)."""

    def __init__(self, settings: Settings, db: MetadataDB, launcher: Launcher, *, client: Any = None,
                 runner: RebuildRunner = run_rebuild_job):
        self.settings = settings
        self.lifecycle = IndexLifecycle(settings, db, client)
        self.launcher = launcher
        self.runner = runner
        self.queue = JobQueue(self.lifecycle.jobs)

    def submit_rebuild(self, request: RebuildRequest, created_by: str) -> str:
        job_id = self.lifecycle.submit(request, created_by)
        settings = self.settings
        self.queue.submit(job_id, lambda: self.launcher(run_admitted, settings, job_id, self.runner, settings, request,
                                                        job_id))
        return job_id

    def gate(self, tolerance: float | None = None) -> EvalGate:
        return EvalGate.configured(self.settings, tolerance=tolerance)
