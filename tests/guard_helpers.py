"""Shared pieces of the guardrail tests: an injectable clock, an LLM whose usage equals what the server reserves, and
the production graph (real ``AuthService`` over SQLite, real Milvus Lite) as one or more router replicas sharing
one metadata DB."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from rag_ray.access.service import AuthService
from rag_ray.api.app import create_app
from rag_ray.api.services import Services
from rag_ray.config import Settings
from rag_ray.guard.metering import estimate_prompt_tokens
from rag_ray.llm.base import ChatMessage, GenerationParams, Usage
from rag_ray.llm.fake import FakeLLM
from rag_ray.metadata import MetadataDB
from rag_ray.store.milvus import ChunkStore
from tests.access_fixtures import DEFAULT_USERS, PASSWORD, create_users
from tests.api_helpers import compose

START = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC: a minute starts here
PRICED = '[{"id": "fake:echo", "input_price": 1000000, "output_price": 1000000}]'  # one USD per token


class Clock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self, now: float = START):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ExactLLM(FakeLLM):
    """Counts prompt tokens the way the server estimates them and always writes ``max_tokens`` words, so a call uses
    exactly what it reserved: how many calls fit in a budget does not depend on timing."""

    def _answer(self, messages: Sequence[ChatMessage], params: GenerationParams) -> tuple[str, Usage]:
        self.calls += 1
        return " ".join(["word"] * params.max_tokens), Usage(estimate_prompt_tokens(messages), params.max_tokens)


CHAT = {"messages": [{"role": "user", "content": "how are the quarterly numbers"}], "max_tokens": 20}


def reserved_tokens(body: dict[str, Any] = CHAT) -> int:
    """What one ``/chat`` call with ``body`` reserves (and, on ``ExactLLM``, uses)."""
    messages = [ChatMessage(m["role"], m["content"]) for m in body["messages"]]
    return estimate_prompt_tokens(messages) + int(body["max_tokens"])


@dataclass
class Replica:
    client: TestClient
    services: Services


@dataclass
class Rig:
    replicas: list[Replica]
    db: MetadataDB
    user_ids: dict[str, str]
    clock: Clock
    llm: ExactLLM
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> TestClient:
        return self.replicas[0].client

    @property
    def services(self) -> Services:
        return self.replicas[0].services

    def token(self, username: str) -> str:
        if username not in self.tokens:
            response = self.client.post("/auth/token", json={"username": username, "password": PASSWORD})
            assert response.status_code == 200, response.text
            self.tokens[username] = response.json()["access_token"]
        return self.tokens[username]

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def close(self) -> None:
        for replica in self.replicas:
            replica.client.close()
        for replica in self.replicas[1:]:
            replica.services.db.dispose()


def build_rig(settings: Settings, db: MetadataDB, store: ChunkStore, *, replicas: int = 1) -> Rig:
    """``replicas`` routers over the same metadata DB (each with its own engine and connections), one clock."""
    user_ids = create_users(db, DEFAULT_USERS)
    clock, llm = Clock(), ExactLLM()
    built = []
    for i in range(replicas):
        replica_db = db if i == 0 else MetadataDB(db.url)
        accounts = AuthService(replica_db, settings, clock=clock)
        services = compose(settings, engine=llm, auth=accounts, accounts=accounts, db=replica_db, store=store)
        services.guard.clock = clock
        built.append(Replica(TestClient(create_app(services)), services))
    return Rig(built, db, user_ids, clock, llm)
