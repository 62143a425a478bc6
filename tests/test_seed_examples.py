"""Every request body of the seed's README ("API 사용법", ../shared/seed/README.ko.md), verbatim, against the production
composition root configured like the seed's deployment: OpenAI, Anthropic and Ollama LLMs (fake servers on 127.0.0.1
with 128k, 8k and 2k-token windows, reached through the real SDKs) and OpenAI, Ollama and local embedders.

Each body must answer 2xx, served by the provider it asks for.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.config import Settings
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.server.platform import LocalPlatform
from rag_ray.testing.fake_servers import FakeAnthropicServer, FakeOllamaServer, FakeOpenAIServer
from rag_ray.types import Acl
from tests.api_helpers import compose

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "README.ko.md"
SEED_DIRECTORY = Path("/path/to/documents")  # the seed's /extract/filesystem body names this directory
AUTH = {"Authorization": "Bearer admin-token"}
pytestmark = pytest.mark.skipif(not SEED.exists(), reason=f"the seed spec is not at {SEED}")


@dataclass(frozen=True)
class SeedExample:
    title: str
    path: str
    body: dict[str, Any]


def seed_examples() -> list[SeedExample]:
    """``### title`` + ``curl -X POST "http://localhost:8000/<path>" … -d '<json>'`` blocks of the API section."""
    text = SEED.read_text()
    section = text[text.index("## 📡 API 사용법"):text.index("## 💻 프로그래밍 사용법")]
    found = re.findall(r"### (.+?)\n+```bash\ncurl -X POST \"http://localhost:8000(/[\w/]+)\".*?-d '(\{.*?\})'\n```",
                       section, flags=re.S)
    return [SeedExample(title, path, json.loads(body)) for title, path, body in found]


@dataclass
class Fakes:
    openai: FakeOpenAIServer
    anthropic: FakeAnthropicServer
    ollama: FakeOllamaServer


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    servers = Fakes(FakeOpenAIServer(context_limit=128_000, dimensions=3072),
                    FakeAnthropicServer(context_limit=8_000), FakeOllamaServer(context_limit=2_000, dimensions=768))
    for server in (servers.openai, servers.anthropic, servers.ollama):
        server.start()
    yield servers
    for server in (servers.openai, servers.anthropic, servers.ollama):
        server.stop()


def seed_settings(make_settings: Callable[..., Settings], fakes: Fakes) -> Settings:
    llms = [{"id": "openai:gpt-4", "api_key": "sk-fake", "base_url": fakes.openai.base_url, "max_context": 128_000},
            {"id": "anthropic:claude-3-5-sonnet-latest", "api_key": "sk-fake", "base_url": fakes.anthropic.base_url,
             "max_context": 8_192},
            {"id": "ollama:llama3.2", "base_url": fakes.ollama.base_url, "max_context": 2_048}]
    embedders = [{"id": "local:all-MiniLM-L6-v2"},
                 {"id": "openai:text-embedding-3-large", "api_key": "sk-fake", "base_url": fakes.openai.base_url},
                 {"id": "ollama:nomic-embed-text", "base_url": fakes.ollama.base_url}]
    return make_settings(
        embedding_provider="local", embedding_model="all-MiniLM-L6-v2", llm_provider="openai", llm_model="gpt-4",
        llm_providers_json=json.dumps(llms), embedding_providers_json=json.dumps(embedders),
        rdb_allowed_hosts=["localhost:5432"], callback_allow_private=True, allowed_roots=[SEED_DIRECTORY.parent])


@pytest.fixture
def seed_directory() -> Iterator[Path]:
    existed = SEED_DIRECTORY.exists()
    try:
        SEED_DIRECTORY.mkdir(parents=True, exist_ok=True)
    except OSError:
        pytest.skip(f"cannot create {SEED_DIRECTORY} (the seed's /extract/filesystem directory)")
    (SEED_DIRECTORY / "notes.txt").write_text("트랜스포머 아키텍처는 어텐션 메커니즘을 사용합니다.")
    yield SEED_DIRECTORY
    if not existed:
        shutil.rmtree(SEED_DIRECTORY.parent.parent, ignore_errors=True)


def ingest_documents(settings: Settings, embedder: Any, documents: Path, tmp: Path) -> None:
    corpus = tmp / "corpus"
    corpus.mkdir()
    for name in ("ko_namuwiki_profile_excerpt.txt", "ko_babel_user_handbook.md", "en_war_and_peace_1p.txt"):
        shutil.copy(documents / name, corpus / name)
    summary = LocalPlatform(embedder).run_file_job(settings, FileIngestRequest(path=corpus, acl=Acl("u-admin")))
    assert summary.status == "succeeded", summary.errors


EXPECTED_PROVIDER = {"기본 LLM 쿼리": "openai", "스트리밍 LLM 응답": "anthropic",
                     "RAG 쿼리 (벡터 검색 + LLM)": "openai", "임베딩 생성": "openai",
                     "Ollama 로컬 임베딩 생성": "ollama", "단일 LLM 응답 생성 (고속 모드)": "openai"}


def served_by(example: SeedExample, status: int, text: str) -> str | None:
    if example.path == "/chat/stream":
        done = [line for line in text.splitlines() if line.startswith("data:")][-1]
        return str(json.loads(done[5:])["provider"])
    reply = json.loads(text)
    return reply.get("provider")


def test_the_seed_examples_are_all_found():
    titles = [e.title for e in seed_examples()]
    assert len(titles) == 12 and set(EXPECTED_PROVIDER) <= set(titles)


def test_every_seed_body_verbatim(make_settings, fakes, local_embedder, shared_data, seed_directory, tmp_path):
    settings = seed_settings(make_settings, fakes)
    ingest_documents(settings, local_embedder, shared_data / "documents", tmp_path)
    client = TestClient(create_app(compose(settings, embedder=local_embedder)), raise_server_exceptions=False)
    failures = []
    for example in seed_examples():
        r = client.post(example.path, headers=AUTH, json=example.body)
        if r.status_code >= 300:
            failures.append(f"{example.title} {example.path}: {r.status_code} {r.text[:300]}")
            continue
        expected = EXPECTED_PROVIDER.get(example.title)
        if expected is not None and served_by(example, r.status_code, r.text) != expected:
            failures.append(f"{example.title}: served by {served_by(example, r.status_code, r.text)}, not {expected}")
    assert not failures, "\n".join(failures)
    assert fakes.anthropic.count("/messages") and fakes.ollama.count("/api/embed")
