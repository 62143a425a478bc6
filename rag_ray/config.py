"""Typed configuration, read once at the entry point (CLI, job, Serve app builder) and passed down.

Variable names follow the seed (``LLM_PROVIDER``, ``MILVUS_HOST`` …); rag-ray's own additions are
prefixed ``RAG_``. Nothing in the library reads the environment itself.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rag_ray.errors import ConfigError

if TYPE_CHECKING:
    from rag_ray.enrich.policy import GovernancePolicy
    from rag_ray.store.milvus import VectorIndex

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "your-secret-key", "your-secret-key-here",
                       "dev", "development", "password"}

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_LLM_MODEL = "SmolLM2-135M-Instruct"
STOP_RESERVE_S = 10.0  # of RAG_SHUTDOWN_GRACE_S, for what a stop on Ray does after the requests in flight (~5–9 s)
# A SQLite metadata DB's durability under WAL. NORMAL: every commit atomic and consistent, surviving a crash of any
# process, without the fsync FULL pays on each commit (14 ms vs 0.04 ms a commit measured on this project's CI disk,
# where a RAG request's usage, answer and conversation rows are commits); a power loss may roll back the last commits.
SqliteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


class ServerSecret(str):
    """The current server secret (a plain ``str``: sign and encrypt with it) that also carries the retired secrets
    still accepted to verify and decrypt (``RAG_RETIRED_SECRET_KEYS``), so rotating ``SECRET_KEY`` keeps tokens and
    stored values made under an earlier key readable. ``repr`` masks it."""

    retired: tuple[str, ...]

    def __new__(cls, current: str, retired: Iterable[str] = ()) -> ServerSecret:
        secret = super().__new__(cls, current)
        secret.retired = tuple(dict.fromkeys(k for k in retired if k and k != current))
        return secret

    @property
    def accepted(self) -> tuple[str, ...]:
        """The current secret first, then the retired ones."""
        return (str(self), *self.retired)

    def __repr__(self) -> str:
        return f"ServerSecret('********', retired={len(self.retired)})"


def _secret_list(raw: str, name: str) -> list[str]:
    """Comma separated, or a JSON list of strings. The error names the variable, never the value (it is secret)."""
    if not raw.lstrip().startswith("["):
        return [k.strip() for k in raw.split(",") if k.strip()]
    try:
        keys = json.loads(raw)
    except ValueError:
        keys = None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"{name} must be comma separated or a JSON list of strings", field=name)
    return [k.strip() for k in keys if k.strip()]


class Settings(BaseSettings):
    """All runtime settings. Production values come from the environment or ``--env-file``."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True,
                                      case_sensitive=False)

    app_env: Literal["development", "test", "production"] = Field("development", validation_alias="APP_ENV")
    data_dir: Path = Field(Path("./data"), validation_alias="RAG_DATA_DIR")

    # --- API ---
    api_host: str = Field("127.0.0.1", validation_alias="API_HOST")
    api_port: int = Field(8000, validation_alias="API_PORT")
    secret_key: SecretStr | None = Field(None, validation_alias="SECRET_KEY")
    # Earlier SECRET_KEYs: still verify tokens signed with them (until those expire) and decrypt stored RDB source
    # URLs, never sign. Comma separated or a JSON list; drop one and it is refused at once.
    retired_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list,
                                                                      validation_alias="RAG_RETIRED_SECRET_KEYS")
    admin_username: str = Field("admin", validation_alias="RAG_ADMIN_USERNAME")
    admin_password: SecretStr | None = Field(None, validation_alias="RAG_ADMIN_PASSWORD")
    allowed_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list, validation_alias="RAG_ALLOWED_ROOTS")
    max_request_bytes: int = Field(10 * 1024 * 1024, validation_alias="RAG_MAX_REQUEST_BYTES")
    max_upload_bytes: int = Field(50 * 1024 * 1024, validation_alias="RAG_MAX_UPLOAD_BYTES")
    # nesting levels a JSON request body may have (checked before parsing; the parser recurses per level)
    max_json_depth: int = Field(64, ge=1, le=500, validation_alias="RAG_MAX_JSON_DEPTH")
    max_k: int = Field(100, validation_alias="RAG_MAX_K")

    callback_secret: SecretStr | None = Field(None, validation_alias="RAG_CALLBACK_SECRET")
    callback_allow_private: bool = Field(False, validation_alias="RAG_CALLBACK_ALLOW_PRIVATE")
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                                   validation_alias="RAG_CALLBACK_ALLOWED_HOSTS")

    # --- Ray ---
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS")
    # where jobs run and the API is hosted: "ray" (Ray Data + Ray Serve) or "local" (one process, no Ray)
    platform: str = Field("ray", validation_alias="RAG_PLATFORM")
    # how HTTP reaches the router on Ray Serve: Serve's own Python proxy, or HAProxy in front of the replicas
    # (the binary ray[serve] bundles; bench/serve.py: +40% /embeddings texts/s, half the /query overhead on 2 cores)
    serve_ingress: Literal["proxy", "haproxy"] = Field("proxy", validation_alias="RAG_SERVE_INGRESS")
    # Serve's throughput-optimized mode (RAY_SERVE_THROUGHPUT_OPTIMIZED: user code on the replica's loop, gRPC
    # between deployments, buffered request logs); with haproxy, bench/serve.py: /embeddings 0.578 (proxy) ->
    # 0.75-0.78 of the model's rate, /query overhead p50 4.3-4.5 ms. Serve's own request logs then leave stderr.
    serve_throughput_optimized: bool = Field(False, validation_alias="RAG_SERVE_THROUGHPUT_OPTIMIZED")
    # seconds `rag-cli serve`/`rag-server` give a shutdown after SIGTERM/SIGINT before killing what they started
    # (below Kubernetes' default 30 s terminationGracePeriodSeconds and compose's stop_grace_period)
    shutdown_grace_s: float = Field(25.0, gt=0, validation_alias="RAG_SHUTDOWN_GRACE_S")
    # with haproxy: seconds a stopping router replica keeps taking new connections, so that HAProxy has dropped it
    # before it refuses any; then it closes its listener (HAProxy retries a refused connection elsewhere) and waits
    # for the requests in flight. Serve's own default (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S, 30 s, meant for
    # external load balancers) outlasted RAG_SHUTDOWN_GRACE_S, so every stop of a haproxy server was a forced one.
    serve_drain_s: float = Field(2.0, ge=0, validation_alias="RAG_SERVE_DRAIN_S")
    # seconds the requests in flight at a stop get to finish (new ones get 503 meanwhile) before they are cut,
    # so the rest of the stop fits in the grace; unset: the grace less STOP_RESERVE_S, at least half of it
    shutdown_in_flight_s: float | None = Field(None, ge=0, validation_alias="RAG_SHUTDOWN_IN_FLIGHT_S")

    # --- Vector store ---
    milvus_uri: str | None = Field(None, validation_alias="MILVUS_URI")
    milvus_host: str | None = Field(None, validation_alias="MILVUS_HOST")
    milvus_port: int = Field(19530, validation_alias="MILVUS_PORT")
    milvus_user: str | None = Field(None, validation_alias="MILVUS_USER")
    milvus_password: SecretStr | None = Field(None, validation_alias="MILVUS_PASSWORD")
    milvus_token: SecretStr | None = Field(None, validation_alias="MILVUS_TOKEN")
    milvus_lite_port: int = Field(19531, validation_alias="RAG_MILVUS_LITE_PORT")
    collection: str = Field("rag_chunks", validation_alias="RAG_COLLECTION")
    # the dense vector index of a collection this server creates (rag_ray.store.milvus.VectorIndex): AUTOINDEX lets
    # Milvus choose; IVF_FLAT / HNSW need a Milvus server (Milvus Lite refuses them)
    milvus_index_type: Literal["AUTOINDEX", "FLAT", "IVF_FLAT", "HNSW"] = Field(
        "AUTOINDEX", validation_alias="RAG_MILVUS_INDEX_TYPE")
    milvus_ivf_nlist: int = Field(1024, ge=1, le=65536, validation_alias="RAG_MILVUS_IVF_NLIST")
    milvus_ivf_nprobe: int = Field(16, ge=1, le=65536, validation_alias="RAG_MILVUS_IVF_NPROBE")
    milvus_hnsw_m: int = Field(16, ge=2, le=2048, validation_alias="RAG_MILVUS_HNSW_M")
    milvus_hnsw_ef_construction: int = Field(200, ge=1, le=65536, validation_alias="RAG_MILVUS_HNSW_EF_CONSTRUCTION")
    milvus_hnsw_ef: int = Field(64, ge=1, le=16384, validation_alias="RAG_MILVUS_HNSW_EF")

    # --- Metadata DB ---
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    db_type: str = Field("mysql", validation_alias="DB_TYPE")
    db_host: str | None = Field(None, validation_alias="DB_HOST")
    db_port: int | None = Field(None, validation_alias="DB_PORT")
    db_name: str | None = Field(None, validation_alias="DB_NAME")
    db_user: str | None = Field(None, validation_alias="DB_USER")
    db_password: SecretStr | None = Field(None, validation_alias="DB_PASSWORD")

    # --- Embeddings ---
    embedding_provider: str = Field("local", validation_alias="EMBEDDING_PROVIDER")
    embedding_model: str = Field(DEFAULT_EMBEDDING_MODEL, validation_alias="EMBEDDING_MODEL")
    embedding_api_key: SecretStr | None = Field(None, validation_alias="EMBEDDING_API_KEY")
    embedding_base_url: str | None = Field(None, validation_alias="EMBEDDING_BASE_URL")
    embedding_batch_size: int = Field(16, validation_alias="RAG_EMBEDDING_BATCH_SIZE")
    embedding_threads: int = Field(0, validation_alias="RAG_EMBEDDING_THREADS")  # 0: all cores
    embed_batching: bool = Field(True, validation_alias="RAG_EMBED_BATCHING")  # @serve.batch across requests
    # Serve's router gathers concurrent requests' texts into one call to the embedder (fewer handle hops)
    embed_router_batching: bool = Field(True, validation_alias="RAG_EMBED_ROUTER_BATCHING")
    # /embeddings' LRU of vectors (per provider:model, input type, size, text); 0 turns it off
    embedding_cache_size: int = Field(10_000, ge=0, validation_alias="RAG_EMBEDDING_CACHE_SIZE")

    # --- LLM ---
    llm_provider: str = Field("local", validation_alias="LLM_PROVIDER")
    llm_model: str = Field(DEFAULT_LLM_MODEL, validation_alias="LLM_MODEL")
    llm_api_key: SecretStr | None = Field(None, validation_alias="LLM_API_KEY")
    llm_base_url: str | None = Field(None, validation_alias="LLM_BASE_URL")
    llm_max_new_tokens: int = Field(256, validation_alias="RAG_LLM_MAX_NEW_TOKENS")
    # JSON lists of provider specs (rag_ray.providers.config.ProviderSpec); SecretStr as they may hold API keys.
    llm_providers_json: SecretStr | None = Field(None, validation_alias="RAG_LLM_PROVIDERS")
    embedding_providers_json: SecretStr | None = Field(None, validation_alias="RAG_EMBEDDING_PROVIDERS")
    llm_max_retries: int = Field(3, validation_alias="RAG_LLM_MAX_RETRIES")
    # --- Request deadlines (seconds; rag_ray.observability.deadline) ---
    # Each route's default; a request may ask for less or more (X-Request-Timeout header or a timeout_s body field),
    # up to RAG_MAX_REQUEST_TIMEOUT_S. When it passes, every piece of work for the request stops and it ends in 504.
    query_timeout_s: float = Field(60.0, gt=0, validation_alias="RAG_QUERY_TIMEOUT_S")  # /query
    generate_timeout_s: float = Field(120.0, gt=0, validation_alias="RAG_GENERATE_TIMEOUT_S")  # /generate/*
    chat_timeout_s: float = Field(60.0, gt=0, validation_alias="RAG_CHAT_TIMEOUT_S")  # /chat*, /v1/chat/completions
    max_request_timeout_s: float = Field(600.0, gt=0, validation_alias="RAG_MAX_REQUEST_TIMEOUT_S")

    # --- Ingest ---
    chunk_size: int = Field(800, validation_alias="RAG_CHUNK_SIZE")
    chunk_overlap: int = Field(100, validation_alias="RAG_CHUNK_OVERLAP")
    max_file_bytes: int = Field(100 * 1024 * 1024, validation_alias="RAG_MAX_FILE_BYTES")
    # the Ray Data embedding actor pool autoscales between these; max 0: derived from the cluster's CPUs (the
    # job's share of them, one actor per RAG_EMBED_ACTOR_CPUS); each actor runs the model on that many threads
    embed_concurrency_min: int = Field(1, ge=1, validation_alias="RAG_EMBED_CONCURRENCY_MIN")
    embed_concurrency_max: int = Field(0, ge=0, validation_alias="RAG_EMBED_CONCURRENCY_MAX")
    embed_actor_cpus: float = Field(1.0, gt=0, le=64, validation_alias="RAG_EMBED_ACTOR_CPUS")
    # embedding batches of ingest jobs: adapted to the measured throughput (and memory) within [min, max], or
    # fixed at RAG_EMBEDDING_BATCH_SIZE (rag_ray.ingest.batching)
    ingest_adaptive_batching: bool = Field(False, validation_alias="RAG_INGEST_ADAPTIVE_BATCHING")
    ingest_batch_min: int = Field(8, ge=1, le=4096, validation_alias="RAG_INGEST_BATCH_MIN")
    ingest_batch_max: int = Field(256, ge=1, le=4096, validation_alias="RAG_INGEST_BATCH_MAX")
    # a job's memory budget in MiB (0: none): bounds Ray Data's object store use and the adaptive batch size
    ingest_memory_limit_mb: int = Field(0, ge=0, validation_alias="RAG_INGEST_MEMORY_LIMIT_MB")
    # the order files are processed in: fifo (scan order) | size_based (smallest first) | priority_based (newest)
    ingest_processing_strategy: Literal["fifo", "size_based", "priority_based"] = Field(
        "fifo", validation_alias="RAG_INGEST_PROCESSING_STRATEGY")
    # Databases the HTTP API may connect to: "host" or "host:port" entries (empty: none). A name is allowed
    # with whatever it resolves to; an address entry admits any name resolving only to allowed addresses.
    rdb_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                              validation_alias="RAG_RDB_ALLOWED_HOSTS")
    # seconds an RDB source connection may take (TCP connect and login) before the request or job fails
    rdb_connect_timeout_s: float = Field(10.0, gt=0, le=300, validation_alias="RAG_RDB_CONNECT_TIMEOUT_S")

    # --- Jobs (ingest and sync): admission, time limits (rag_ray.ingest.tracking, rag_ray.ingest.supervise) ---
    # jobs running at once over the whole deployment and per user; beyond either, jobs wait with status "queued"
    jobs_max_concurrent: int = Field(2, ge=1, validation_alias="RAG_JOBS_MAX_CONCURRENT")
    jobs_max_per_user: int = Field(1, ge=1, validation_alias="RAG_JOBS_MAX_PER_USER")
    # overall limit from a job's start (0: none): past it the job is stopped and marked failed with the reason
    jobs_timeout_s: float = Field(3600.0, ge=0, validation_alias="RAG_JOBS_TIMEOUT_S")
    # reaching a job's vector store / source database; an unreachable one fails the job after this long
    jobs_connect_timeout_s: float = Field(10.0, gt=0, validation_alias="RAG_JOBS_CONNECT_TIMEOUT_S")
    # jobs with at most this many files (or text for one embedding input) run in their driver process (no Ray Data
    # actors); 0: always Ray Data
    jobs_local_max_files: int = Field(8, ge=0, validation_alias="RAG_JOBS_LOCAL_MAX_FILES")

    # --- Enrichment and governance ---
    # labels added to every chunk at ingest: off | basic | standard | comprehensive (rag_ray.enrich)
    enrichment_level: str = Field("standard", validation_alias="RAG_ENRICHMENT_LEVEL")
    # sensitivity classes only the chunk's owner (and admins) may read, whatever the visibility: comma separated
    governance_owner_only: Annotated[list[str], NoDecode] = Field(["restricted"],
                                                                  validation_alias="RAG_GOVERNANCE_OWNER_ONLY")
    # sensitivity classes only the owner, members of the chunk's groups and admins may read
    governance_group_only: Annotated[list[str], NoDecode] = Field(["confidential"],
                                                                  validation_alias="RAG_GOVERNANCE_GROUP_ONLY")
    mask_pii: bool = Field(True, validation_alias="RAG_MASK_PII")  # mask PII in retrieved text for non-admins

    # --- Retrieval (rag_ray.retrieval.search; defaults chosen by bench/retrieval.py) ---
    fusion_method: Literal["weighted", "rrf"] = Field("weighted", validation_alias="RAG_FUSION")
    fusion_dense_weight: float = Field(0.5, ge=0.0, le=1.0, validation_alias="RAG_FUSION_DENSE_WEIGHT")
    # dense share for mostly-Hangul queries; negative: use RAG_FUSION_DENSE_WEIGHT for every language
    fusion_korean_dense_weight: float = Field(0.1, le=1.0, validation_alias="RAG_FUSION_KOREAN_DENSE_WEIGHT")
    rrf_k: int = Field(60, ge=1, validation_alias="RAG_RRF_K")
    # "none" (default: by measurement the offline "features" reranker lowered SciFact nDCG@10 0.722 → 0.706),
    # "features" (exact dense+BM25 re-scoring; +0.002 on AutoRAG-ko), or "cross-encoder:/local/model/path"
    reranker: str = Field("none", validation_alias="RAG_RERANKER")
    rerank_depth: int = Field(50, ge=1, le=200, validation_alias="RAG_RERANK_DEPTH")
    # hits each leg of a hybrid search fetches for fusion (at least k); see SearchOptions for the measurement
    hybrid_candidates: int = Field(40, ge=1, le=1000, validation_alias="RAG_HYBRID_CANDIDATES")

    # --- Conversations and answer records (rag_ray.conversations, rag_ray.answers) ---
    # conversations idle this long are deleted with their turns and answer records (0: keep forever)
    conversation_retention_days: int = Field(30, ge=0, validation_alias="RAG_CONVERSATION_RETENTION_DAYS")
    # messages (questions + answers) one conversation may hold; a turn past it is a 413 naming conversation_id
    conversation_max_turns: int = Field(200, ge=2, le=10_000, validation_alias="RAG_CONVERSATION_MAX_TURNS")
    # how follow-ups become self-contained before retrieval: "llm" (the configured LLM, "terms" as its fallback)
    # or "terms" (salient words of the previous questions, no LLM call)
    condenser: Literal["llm", "terms"] = Field("llm", validation_alias="RAG_CONDENSER")
    condense_timeout_s: float = Field(20.0, gt=0, validation_alias="RAG_CONDENSE_TIMEOUT_S")

    # --- Index lifecycle (rag_ray.index: rebuild, evaluation gate, switch; RAG_COLLECTION names the alias) ---
    # the eval set `rag-cli index switch` gates on when none is given (BEIR queries.jsonl and qrels .tsv)
    eval_queries: Path | None = Field(None, validation_alias="RAG_EVAL_QUERIES")
    eval_qrels: Path | None = Field(None, validation_alias="RAG_EVAL_QRELS")
    # how far (absolute) a candidate's nDCG@10/recall/MRR may fall below the live collection's and still go live
    eval_tolerance: float = Field(0.01, ge=0.0, le=1.0, validation_alias="RAG_EVAL_TOLERANCE")
    # seconds the server keeps its view of which collection the alias points at (0: look it up on every search)
    index_refresh_s: float = Field(1.0, ge=0.0, validation_alias="RAG_INDEX_REFRESH_S")

    # --- Guardrails: limits and budgets, login protection (rag_ray.guard), permissions from the source ---
    # seconds a replica keeps the limit rules (set with /admin/limits or `rag-cli limits set`) before re-reading them
    limits_cache_s: float = Field(5.0, ge=0.0, validation_alias="RAG_LIMITS_CACHE_S")
    # failed logins per username (case-folded) / per client address within the window before a lockout; the address
    # limit also counts invalid API keys and invalid refresh tokens (each on its own)
    login_max_failures: int = Field(5, ge=1, validation_alias="RAG_LOGIN_MAX_FAILURES")
    login_address_max_failures: int = Field(20, ge=1, validation_alias="RAG_LOGIN_ADDRESS_MAX_FAILURES")
    login_failure_window_s: float = Field(900.0, gt=0, validation_alias="RAG_LOGIN_FAILURE_WINDOW_S")
    login_lockout_s: float = Field(900.0, gt=0, validation_alias="RAG_LOGIN_LOCKOUT_S")
    # requests per minute one client address may make to /auth/token and /auth/refresh (0: unlimited)
    auth_rpm_per_address: int = Field(60, ge=0, validation_alias="RAG_AUTH_RPM_PER_ADDRESS")
    # seconds a replica reuses a bearer token's verified caller (rag_ray.access.cache) instead of reading the DB on
    # every request: a revoked token, disabled user or changed role/groups takes effect within this bound; 0: off
    auth_cache_ttl_s: float = Field(5.0, ge=0.0, le=300.0, validation_alias="RAG_AUTH_CACHE_TTL_S")
    # file owner / group / mode → chunk ACL for filesystem ingest (rag_ray.ingest.source_acl), JSON:
    # {"unix_users": {"alice": "alice"}, "unix_groups": {"eng": "g-eng"}, "world_readable": "public"}; {}: off
    source_acl_map: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict,
                                                                validation_alias="RAG_SOURCE_ACL_MAP")

    # --- Operations: logs, metrics, connection pools (rag_ray.observability, rag_ray.metadata.db) ---
    # JSON (or text) lines with the request id, to stderr and to <data dir>/logs/app.log (rotated by size)
    log_level: str = Field("INFO", validation_alias="RAG_LOG_LEVEL")
    log_json: bool = Field(True, validation_alias="RAG_LOG_JSON")
    log_file: bool = Field(True, validation_alias="RAG_LOG_FILE")
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=0, validation_alias="RAG_LOG_MAX_BYTES")  # 0: never rotate
    log_backup_count: int = Field(5, ge=0, validation_alias="RAG_LOG_BACKUP_COUNT")
    # a bearer token Prometheus may scrape /metrics with (no user JWT); compared in constant time
    metrics_token: SecretStr | None = Field(None, validation_alias="RAG_METRICS_TOKEN")
    # the metadata DB's connection pool (PostgreSQL/MySQL; SQLite keeps its own pooling)
    db_pool_size: int = Field(5, ge=1, validation_alias="RAG_DB_POOL_SIZE")
    db_max_overflow: int = Field(10, ge=0, validation_alias="RAG_DB_MAX_OVERFLOW")
    db_pool_timeout_s: float = Field(30.0, gt=0, validation_alias="RAG_DB_POOL_TIMEOUT_S")
    db_pool_recycle_s: int = Field(3600, ge=-1, validation_alias="RAG_DB_POOL_RECYCLE_S")  # -1: never
    # a SQLite metadata DB's durability under WAL (see SqliteSynchronous)
    sqlite_synchronous: SqliteSynchronous = Field("NORMAL", validation_alias="RAG_SQLITE_SYNCHRONOUS")
    # seconds the Milvus client waits to connect (and for each call without its own timeout)
    milvus_timeout_s: float = Field(30.0, gt=0, validation_alias="RAG_MILVUS_TIMEOUT_S")

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, data: Any) -> Any:
        # `SECRET_KEY=` in a .env must mean "not set" (generate one), never "sign with an empty key".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p for p in value.split(":") if p]
        return value

    @field_validator("retired_secret_keys", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        return _secret_list(value, "RAG_RETIRED_SECRET_KEYS") if isinstance(value, str) else value

    @field_validator("callback_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("rdb_allowed_hosts", mode="before")
    @classmethod
    def _split_rdb_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                import json

                return json.loads(value)
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("source_acl_map", mode="before")
    @classmethod
    def _parse_acl_map(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            raise ConfigError("RAG_SOURCE_ACL_MAP must be a JSON object", field="RAG_SOURCE_ACL_MAP") from None

    @field_validator("governance_owner_only", "governance_group_only", mode="before")
    @classmethod
    def _split_levels(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip().lower() for v in value.split(",") if v.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        allowed = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        if value.strip().upper() not in allowed:
            raise ValueError(f"RAG_LOG_LEVEL must be one of {', '.join(allowed)}")
        return value.strip().upper()

    @field_validator("enrichment_level")
    @classmethod
    def _check_enrichment_level(cls, value: str) -> str:
        allowed = ("off", "basic", "standard", "comprehensive")
        if value.strip().lower() not in allowed:
            raise ValueError(f"RAG_ENRICHMENT_LEVEL must be one of {', '.join(allowed)}")
        return value.strip().lower()

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("RAG_CHUNK_OVERLAP must be smaller than RAG_CHUNK_SIZE")
        return self

    @model_validator(mode="after")
    def _check_drain_fits_the_grace(self) -> Settings:
        if self.serve_ingress == "haproxy" and self.serve_drain_s >= self.shutdown_grace_s:
            raise ValueError(f"RAG_SERVE_DRAIN_S ({self.serve_drain_s:g}) must be below RAG_SHUTDOWN_GRACE_S "
                             f"({self.shutdown_grace_s:g}): a stop waits out the drain before the requests in flight")
        return self

    @model_validator(mode="after")
    def _check_in_flight_fits_the_grace(self) -> Settings:
        if self.shutdown_in_flight_s is not None and self.shutdown_in_flight_s >= self.shutdown_grace_s:
            raise ValueError(f"RAG_SHUTDOWN_IN_FLIGHT_S ({self.shutdown_in_flight_s:g}) must be below "
                             f"RAG_SHUTDOWN_GRACE_S ({self.shutdown_grace_s:g}): the rest of the stop (Serve, Ray, "
                             f"Milvus Lite) takes ~{STOP_RESERVE_S:g}s after the requests in flight")
        return self

    @model_validator(mode="after")
    def _check_vector_index(self) -> Settings:
        self.vector_index()  # a ConfigError naming RAG_MILVUS_IVF_NPROBE when it exceeds RAG_MILVUS_IVF_NLIST
        return self

    # ---- derived values ----
    def in_flight_s(self) -> float:
        """What the requests in flight get at a stop: ``RAG_SHUTDOWN_IN_FLIGHT_S``, else the grace less the time the
        rest of a stop on Ray takes (15 s of the default 25), at least half the grace."""
        if self.shutdown_in_flight_s is not None:
            return self.shutdown_in_flight_s
        return max(self.shutdown_grace_s - STOP_RESERVE_S, self.shutdown_grace_s / 2)

    def vector_index(self) -> VectorIndex:
        """The store's index settings (a ConfigError naming the setting when they contradict each other)."""
        from rag_ray.store.milvus import VectorIndex

        return VectorIndex(self.milvus_index_type, nlist=self.milvus_ivf_nlist, nprobe=self.milvus_ivf_nprobe,
                           m=self.milvus_hnsw_m, ef_construction=self.milvus_hnsw_ef_construction,
                           ef=self.milvus_hnsw_ef)

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def metadata_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.db_host:
            return self._url_from_parts()
        return f"sqlite:///{self.resolved_data_dir / 'rag.sqlite'}"

    def _url_from_parts(self) -> str:
        from sqlalchemy.engine import URL

        drivers = {"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql", "postgresql": "postgresql+psycopg",
                   "postgres": "postgresql+psycopg"}
        driver = drivers.get(self.db_type.lower())
        if driver is None:
            raise ConfigError(f"DB_TYPE {self.db_type!r} is not supported for the metadata DB", field="DB_TYPE")
        pw = self.db_password.get_secret_value() if self.db_password else None
        url = URL.create(driver, username=self.db_user, password=pw, host=self.db_host, port=self.db_port,
                         database=self.db_name)
        return url.render_as_string(hide_password=False)

    @property
    def uses_milvus_lite(self) -> bool:
        return not (self.milvus_uri or self.milvus_host)

    @property
    def milvus_address(self) -> str:
        if self.milvus_uri:
            return self.milvus_uri
        if self.milvus_host:
            return f"http://{self.milvus_host}:{self.milvus_port}"
        return f"http://127.0.0.1:{self.milvus_lite_port}"

    @property
    def milvus_token_value(self) -> str:
        if self.milvus_token:
            return self.milvus_token.get_secret_value()
        if self.milvus_user and self.milvus_password:
            return f"{self.milvus_user}:{self.milvus_password.get_secret_value()}"
        return ""

    @property
    def resolved_allowed_roots(self) -> list[Path]:
        roots = self.allowed_roots or [self.resolved_data_dir / "inbox"]
        return [Path(r).expanduser().resolve() for r in roots]

    def jwt_secret(self) -> ServerSecret:
        """The signing secret (configured, or generated once and kept in the data dir), carrying the retired ones."""
        return ServerSecret(self._current_secret(), (k.get_secret_value() for k in self.retired_secret_keys))

    def _current_secret(self) -> str:
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.resolved_data_dir / "secret.key"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key

    def callback_signing_key(self) -> str:
        """Key for HMAC-signed progress callbacks: configured, else derived from the JWT secret."""
        if self.callback_secret is not None:
            return self.callback_secret.get_secret_value()
        import hashlib
        import hmac

        return hmac.new(self.jwt_secret().encode(), b"rag-ray progress callbacks", hashlib.sha256).hexdigest()

    def governance_policy(self) -> GovernancePolicy:
        """The ``GovernancePolicy`` the retrieval path enforces (``rag_ray.enrich.policy``)."""
        from rag_ray.enrich.policy import GovernancePolicy

        try:
            return GovernancePolicy.model_validate({"owner_only": self.governance_owner_only,
                                                    "group_only": self.governance_group_only,
                                                    "mask_pii_for_non_admins": self.mask_pii})
        except ValueError as exc:
            raise ConfigError(f"invalid governance policy: {exc}", field="RAG_GOVERNANCE_OWNER_ONLY") from exc

    def validate_for_production(self) -> list[str]:
        """Problems that make this configuration unsafe; production refuses to start with any."""
        problems: list[str] = []
        if self.app_env != "production":
            return problems
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if key.lower() in PLACEHOLDER_SECRETS or len(key) < 32:
            problems.append("SECRET_KEY is missing, a placeholder, or shorter than 32 characters")
        retired = [k.get_secret_value() for k in self.retired_secret_keys]
        if any(k.lower() in PLACEHOLDER_SECRETS or len(k) < 32 for k in retired):
            problems.append("RAG_RETIRED_SECRET_KEYS holds a placeholder or a key shorter than 32 characters")
        if self.admin_password and self.admin_password.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            problems.append("RAG_ADMIN_PASSWORD is a placeholder")
        token = self.metrics_token.get_secret_value() if self.metrics_token else None
        if token is not None and (token.lower() in PLACEHOLDER_SECRETS or len(token) < 24):
            problems.append("RAG_METRICS_TOKEN is a placeholder or shorter than 24 characters")
        return problems

    def masked(self) -> dict[str, Any]:
        """Settings as a dict with every secret masked (for `config show` and logs)."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                out[name] = str(value)
            elif isinstance(value, list):
                out[name] = [str(v) for v in value]
            else:
                out[name] = value
        if out.get("database_url"):
            out["database_url"] = _mask_url(out["database_url"])
        return out


def _mask_url(url: str | None) -> str | None:
    if not url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "********"


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment (and an optional .env file) plus explicit overrides."""
    settings = Settings(_env_file=env_file, **overrides)
    problems = settings.validate_for_production()
    if problems:
        raise ConfigError("; ".join(problems), field="SECRET_KEY")
    return settings
