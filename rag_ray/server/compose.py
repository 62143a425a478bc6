"""The one place the server's object graph is built: Serve's router, ``rag-cli serve --platform local`` and the
tests all call ``build_services`` (over different ``Backends``), so tests exercise the production wiring."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI

from rag_ray.access.cache import CachingAuthenticator
from rag_ray.access.service import AuthService
from rag_ray.answers.service import AnswerService
from rag_ray.answers.store import AnswerStore
from rag_ray.api.app import create_app
from rag_ray.api.middleware import ProxyRequestId
from rag_ray.api.services import Authenticator, Services
from rag_ray.config import Settings
from rag_ray.conversations import ConversationService, ConversationStore, create_condenser
from rag_ray.embedding import create_embedder
from rag_ray.embedding.backends import ThreadedBackend
from rag_ray.embedding.base import AsyncEmbedder
from rag_ray.generation.rag import RagPipeline
from rag_ray.guard.metering import MeteredLLMManager
from rag_ray.guard.service import GuardService
from rag_ray.index.lifecycle import IndexService
from rag_ray.index.live import FollowingRetrieval, LiveIndex
from rag_ray.ingest.file_jobs import FileJobService
from rag_ray.ingest.rdb_jobs import RdbJobService
from rag_ray.ingest.tracking import JobStore
from rag_ray.metadata import MetadataDB
from rag_ray.providers.config import build_llm_manager
from rag_ray.providers.embeddings import build_embedding_service
from rag_ray.providers.manager import LLMManager
from rag_ray.providers.strategies import QualityBased
from rag_ray.retrieval.search import fusion_from_settings, options_from_settings, reranker_from_settings
from rag_ray.retrieval.service import RetrievalService
from rag_ray.runtime import open_store
from rag_ray.server.backends import Backends
from rag_ray.server.platform import run_file_ingest, run_rdb_sync
from rag_ray.store.milvus import ChunkStore, check_collection_compatible


async def build_services(settings: Settings, backends: Backends, *, auth: Authenticator | None = None,
                         accounts: AuthService | None = None, llm: LLMManager | None = None,
                         db: MetadataDB | None = None, store: ChunkStore | None = None) -> Services:
    """Everything the routes use, from ``settings``. ``auth``/``accounts``/``llm`` replace the configured ones (test
    doubles; ``auth`` defaults to ``accounts``); ``db``/``store``: connections the caller already holds."""
    embedder = await backends.embedder()
    model_id = f"{embedder.provider}:{embedder.model}"
    db = db or MetadataDB.from_settings(settings)
    store = store or open_store(settings, embedder.dimension, model_id)
    check_collection_compatible(store, model_id, embedder.dimension)  # never mix two models' vectors
    guard = GuardService.from_settings(settings, db)
    # every LLM call made for a request is charged to its caller's budgets (rag_ray.guard.metering)
    manager = MeteredLLMManager(llm or build_llm_manager(settings, create=backends.llm), guard)
    platform = backends.platform
    accounts = accounts or AuthService(db, settings)
    retrieval = retrieval_service(settings, store, embedder)
    generation = await backends.generation(manager)
    answers = AnswerService(AnswerStore(db))
    await answers.refresh()  # the quality estimate starts from the feedback already given
    manager.pool.use_strategy(QualityBased(answers.book))  # feedback and scores steer the ``quality`` strategy
    return Services(
        settings=settings, auth=auth or CachingAuthenticator(accounts, settings.auth_cache_ttl_s),
        accounts=accounts, guard=guard, audit=accounts.audit,
        db=db, store=store, embedder=embedder,
        embeddings=build_embedding_service(settings, embedder),
        llm=manager, retrieval=retrieval, generation=generation,
        rag=RagPipeline(retrieval=retrieval, generation=generation, llm=manager), jobs=JobStore(db),
        file_jobs=FileJobService(settings, db, store, partial(run_file_ingest, platform), launcher=platform.launch),
        rdb_jobs=RdbJobService(settings, db, partial(run_rdb_sync, platform), launcher=platform.launch),
        index=IndexService(settings, db, platform.launch, client=store.client),
        conversations=conversation_service(settings, db, manager), answers=answers)


def conversation_service(settings: Settings, db: MetadataDB, llm: LLMManager) -> ConversationService:
    store = ConversationStore(db, max_turns=settings.conversation_max_turns)
    condenser = create_condenser(settings.condenser, llm, timeout_s=settings.condense_timeout_s)
    return ConversationService(store, condenser, retention_days=settings.conversation_retention_days)


def retrieval_service(settings: Settings, store: ChunkStore, embedder: AsyncEmbedder) -> RetrievalService:
    """Retrieval that follows the ``RAG_COLLECTION`` alias: a switch made by ``rag-cli index switch`` takes effect
    here within ``RAG_INDEX_REFRESH_S``, with the new collection's model (built here when it is not ``embedder``)."""
    def embedder_for(model_id: str) -> AsyncEmbedder:
        provider, _, model = model_id.partition(":")
        return ThreadedBackend(create_embedder(settings, provider=provider, model=model))

    live = LiveIndex(store.client, settings.collection, embedder, embedder_for, refresh_s=settings.index_refresh_s)
    return FollowingRetrieval(store, embedder, live=live, max_k=settings.max_k, policy=settings.governance_policy(),
                              fusion=fusion_from_settings(settings), reranker=reranker_from_settings(settings),
                              options=options_from_settings(settings))


async def build_app(settings: Settings, backends: Backends, *, proxy_request_id: ProxyRequestId | None = None,
                    **overrides: Any) -> FastAPI:
    """``create_app`` over ``build_services`` (``overrides``: its keyword arguments)."""
    return create_app(await build_services(settings, backends, **overrides), proxy_request_id=proxy_request_id)
