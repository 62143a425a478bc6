"""Session-wide fixtures: one Milvus Lite server, one Ray, one loaded embedding model per test run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Before anything imports ray: under `uv run`, Ray would otherwise copy the whole project (and its 7 GB
# .venv) into every session's working_dir. Tests run workers from this interpreter directly.
os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from argon2.profiles import CHEAPEST

from rag_ray.access import passwords
from rag_ray.config import Settings
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.store.lite_server import MilvusLiteServer, free_port
from rag_ray.store.milvus import ChunkStore
from tests.job_helpers import wait_until

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Passwords hashed in this process use argon2's cheapest parameters: the default's ~0.25 s per hash and per login took
# 26% of the access and leak tests' time (measured). Servers the tests start keep the default (test_access_users).
passwords.use_parameters(CHEAPEST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the session's Ray run last, in their usual order: once started, its idle processes (GCS, raylet,
    Serve's controller, proxy and replicas) take CPU from every test after them until the session ends."""
    items.sort(key=lambda item: isinstance(item, pytest.Function) and "ray_local" in item.fixturenames)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MilvusLiteServer(tmp_path_factory.mktemp("milvus"), free_port()).start()
    yield server.uri
    server.stop()


@pytest.fixture
def collection_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_settings(tmp_path: Path, milvus_uri: str, collection_name: str) -> Callable[..., Settings]:
    """Settings isolated per test: own data dir, own collection, the session's Milvus Lite."""

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {"data_dir": tmp_path / "data", "milvus_uri": milvus_uri,
                                     "collection": collection_name, "embedding_provider": "fake",
                                     "embedding_model": "hash-bow", "llm_provider": "fake", "llm_model": "echo",
                                     "app_env": "test", "secret_key": "test-secret-" + "x" * 40}
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def fake_store(milvus_uri: str, collection_name: str, fake_embedder: FakeEmbedder) -> Iterator[ChunkStore]:
    store = ChunkStore.connect(milvus_uri, collection_name, fake_embedder.dimension)
    yield store
    store.drop()


@pytest.fixture(scope="session")
def local_embedder():  # type: ignore[no-untyped-def]
    """The real default model (all-MiniLM-L6-v2 from its PyPI package), loaded once."""
    from rag_ray.embedding.local import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def local_llm():  # type: ignore[no-untyped-def]
    """The real default LLM (SmolLM2-135M-Instruct from its PyPI package), loaded once; read its load through
    ``status()`` / ``active_generations``."""
    from rag_ray.llm.local import TransformersLLM

    return TransformersLLM()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray for the whole session (2 CPUs, like the CI machine)."""
    import ray

    from jobs.ray_executor import init_ray

    init_ray(Settings(), num_cpus=2)
    yield
    ray.shutdown()


def small_deployment_options(**overrides: object):  # type: ignore[no-untyped-def]
    """Tiny CPU reservations so Serve apps and Ray Data jobs share the 2-CPU test Ray."""
    from deployments.app import DeploymentOptions

    values: dict[str, object] = {"router_cpus": 0.05, "embedder_cpus": 0.05, "llm_cpus": 0.05}
    values.update(overrides)
    return DeploymentOptions(**values)  # type: ignore[arg-type]


class ServeApp:
    """A running Serve app: base URL, its settings, and an admin token that outlives the access-token TTL (the app
    serves a whole session, which can run longer than 30 minutes on a loaded machine)."""

    TOKEN_REFRESH_S = 10 * 60

    def __init__(self, url: str, settings: Settings, admin_password: str):
        self.url, self.settings, self.admin_password = url, settings, admin_password
        self._token, self._issued = "", float("-inf")

    @property
    def admin_token(self) -> str:
        import time

        import httpx

        if time.monotonic() - self._issued > self.TOKEN_REFRESH_S:
            self._token = httpx.post(f"{self.url}/auth/token", json={"username": "admin",
                                     "password": self.admin_password}, timeout=60).json()["access_token"]
            self._issued = time.monotonic()
        return self._token

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}


def _answers_200(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def _start_serve(port: int) -> None:
    """Start Serve's HTTP proxy; on a loaded 2-core box its first proxy can be killed before it runs."""
    import ray
    from ray import serve

    for attempt in range(3):
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 120})
            return
        except ray.exceptions.ActorDiedError:
            if attempt == 2:
                raise
            serve.shutdown()


@pytest.fixture(scope="session")
def serve_app(ray_local: None, milvus_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeApp]:
    """The real deployment graph (router, batched embedder, LLM deployment) with fake providers, once."""
    from ray import serve

    from deployments.app import build_app
    from rag_ray.access.bootstrap import bootstrap_admin
    from rag_ray.metadata import MetadataDB

    settings = Settings(data_dir=tmp_path_factory.mktemp("serve"), milvus_uri=milvus_uri,  # type: ignore[call-arg]
                        collection=f"serve_{uuid.uuid4().hex[:8]}", embedding_provider="fake",
                        embedding_model="hash-bow", llm_provider="fake", llm_model="echo", app_env="test",
                        secret_key="serve-test-secret-" + "y" * 40, admin_password="admin-pass-123",
                        api_port=free_port())
    db = MetadataDB(settings.metadata_url)
    bootstrap_admin(settings, db)
    db.dispose()
    _start_serve(settings.api_port)
    serve.run(build_app(settings, small_deployment_options()), name="rag", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{settings.api_port}"
    # serve.run returns once the app runs, but in HAProxy mode the ingress may still be reloading its config (a new
    # process): a request in that window is dropped unanswered (seen once in CI)
    wait_until(lambda: _answers_200(f"{url}/health"), 120, "the session's Serve app to answer /health")
    yield ServeApp(url, settings, "admin-pass-123")
    serve.delete("rag")
