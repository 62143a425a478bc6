"""Build the FastAPI app in-process (no Ray) with real SQLite, real Milvus Lite and fake models."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.enrich.policy import GovernancePolicy
from rag_ray.metadata import MetadataDB
from rag_ray.server.backends import LocalBackends
from rag_ray.server.compose import build_services
from rag_ray.store.milvus import ChunkStore
from rag_ray.testing.auth import StaticAuthenticator
from rag_ray.types import Principal

ADMIN = Principal("u-admin", "admin", "admin")
ALICE = Principal("u-alice", "alice", "user", ("g-team",))
BOB = Principal("u-bob", "bob", "user")
TOKENS = {"admin-token": ADMIN, "alice-token": ALICE, "bob-token": BOB}


@dataclass
class ApiRig:
    client: TestClient
    settings: Settings
    db: MetadataDB
    store: ChunkStore
    embedder: Any

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {who}-token"}


def compose(settings: Settings, *, embedder: Any = None, engine: Any = None, auth: Any = None,
            **overrides: Any) -> Any:
    """The production composition root over in-process backends with test doubles: ``LocalBackends`` with a fake
    embedder; ``engine`` replaces the settings' ``llm_provider:llm_model`` (else the registry builds it: fake:echo from
    ``make_settings``, or real adapters against fake servers)."""
    engines = {f"{settings.llm_provider}:{settings.llm_model}": engine} if engine is not None else {}
    backends = LocalBackends(settings, embedder=embedder or FakeEmbedder(), llms=engines)
    return asyncio.run(build_services(settings, backends, auth=auth or StaticAuthenticator(TOKENS), **overrides))


def build_rig(settings: Settings, store: ChunkStore, embedder: Any = None, llm: Any = None,
              policy: GovernancePolicy | None = None, manager: Any = None) -> ApiRig:
    """``policy``: the governance policy retrieval enforces (None: ACL only, nothing masked); ``llm``: the engine of
    the configured LLM; ``manager``: a whole ``LLMManager`` instead of the configured providers."""
    embedder = embedder or FakeEmbedder()
    settings = settings if policy is not None else settings.model_copy(update={"mask_pii": False})
    extra = {"llm": manager} if manager is not None else {}
    services = compose(settings, embedder=embedder, engine=llm, store=store, **extra)
    return ApiRig(TestClient(create_app(services)), settings, services.db, store, embedder)


def inbox(settings: Settings) -> Path:
    path = settings.resolved_allowed_roots[0]
    path.mkdir(parents=True, exist_ok=True)
    return path
