"""Plain data shared across layers (no Ray, no Milvus imports)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

Visibility = Literal["private", "group", "public"]
InputType = Literal["query", "document"]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_chunk_id(source_id: str, chunk_index: int, content_hash: str) -> str:
    """Deterministic chunk id: same source, position and content → same id (idempotent upserts)."""
    digest = hashlib.sha256(f"{source_id}\x00{chunk_index}\x00{content_hash}".encode()).hexdigest()
    return digest[:32]


def make_doc_id(source_uri: str) -> str:
    return hashlib.sha256(source_uri.encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True)
class Principal:
    """Who is asking. Admins see everything; others see what their ACL allows."""

    user_id: str
    username: str = ""
    role: str = "user"
    group_ids: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


SYSTEM_PRINCIPAL = Principal(user_id="system", username="system", role="admin")


@dataclass(frozen=True)
class Acl:
    """Who may read a chunk, stamped on every chunk at ingest time."""

    owner_id: str = "system"
    group_ids: tuple[str, ...] = ()
    visibility: Visibility = "private"


@dataclass
class ParsedDocument:
    """The text of one source (file or row), before chunking."""

    source_uri: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        return make_doc_id(self.source_uri)


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    source_uri: str
    chunk_index: int
    text: str
    content_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)
    acl: Acl = field(default_factory=Acl)


@dataclass
class SearchHit:
    chunk_id: str
    doc_id: str
    source_uri: str
    chunk_index: int
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"chunk_id": self.chunk_id, "doc_id": self.doc_id, "source": self.source_uri,
                "chunk_index": self.chunk_index, "text": self.text, "score": self.score,
                "metadata": self.metadata}
