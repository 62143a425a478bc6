"""The Milvus side of the index lifecycle: the alias ``RAG_COLLECTION`` and the collections behind it.

Collections are named ``<alias>__<model slug>__<n>``; what wrote a collection is in its properties (the embedding
model, recorded by ``ChunkStore``, and the chunking). Moving the alias is one Milvus call, atomic for readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rag_ray.config import Settings
from rag_ray.errors import Conflict, InvalidInput
from rag_ray.store.milvus import EMBEDDING_MODEL_PROPERTY, GRPC_OPTIONS, ChunkStore, mapped_errors

CHUNK_SIZE_PROPERTY = "rag.chunk_size"
CHUNK_OVERLAP_PROPERTY = "rag.chunk_overlap"
_SLUG = re.compile(r"[^a-z0-9]+")
_MAX_NAME = 255


def connect_client(settings: Settings) -> Any:
    """A Milvus client for the configured server (the same options ``ChunkStore.connect`` uses)."""
    from pymilvus import MilvusClient

    with mapped_errors(f"connecting to Milvus at {settings.milvus_address}"):
        return MilvusClient(uri=settings.milvus_address, token=settings.milvus_token_value,
                            timeout=settings.milvus_timeout_s, grpc_options=GRPC_OPTIONS)


def model_slug(model_id: str) -> str:
    """``local:all-MiniLM-L6-v2`` → ``local_all_minilm_l6_v2`` (what Milvus accepts in a collection name)."""
    return _SLUG.sub("_", model_id.lower()).strip("_") or "model"


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    embedding_model: str | None
    dimension: int
    chunk_size: int | None
    chunk_overlap: int | None
    rows: int


class IndexCatalog:
    def __init__(self, client: Any, alias: str):
        self.client = client
        self.alias = alias

    # ---- reading ----
    def live_name(self) -> str | None:
        """The collection the alias points at; None when there is no alias of that name (a collection called
        ``RAG_COLLECTION`` from before aliases, or nothing yet). ``describe_collection`` of an alias names its
        collection (``describe_alias`` would raise, and pymilvus log, for a missing alias on every refresh)."""
        with mapped_errors(f"resolving the alias {self.alias!r}"):
            if not self.client.has_collection(self.alias):
                return None
            name = str(self.client.describe_collection(self.alias).get("collection_name") or "")
        return name if name and name != self.alias else None

    def exists(self, name: str) -> bool:
        with mapped_errors(f"looking up collection {name!r}"):
            return bool(self.client.has_collection(name))

    def is_plain_collection(self, name: str) -> bool:
        """``name`` is a collection's own name (not an alias of another one)."""
        with mapped_errors(f"describing collection {name!r}"):
            return bool(self.client.has_collection(name)) and \
                self.client.describe_collection(name).get("collection_name") == name

    def family(self) -> list[str]:
        """Collections of this alias: ``<alias>__*``, and the alias itself while it is still a collection."""
        with mapped_errors("listing collections"):
            names = [str(n) for n in self.client.list_collections()]
        return sorted(n for n in names if n == self.alias or n.startswith(f"{self.alias}__"))

    def info(self, name: str, *, rows: bool = True) -> CollectionInfo:
        """What ``name`` holds; ``rows=False``: without counting its rows (0)."""
        with mapped_errors(f"describing collection {name!r}"):
            described = self.client.describe_collection(name)
            counted = self.client.query(name, filter="", output_fields=["count(*)"]) if rows else []
        vector = next(f for f in described.get("fields", []) if f.get("name") == "vector")
        props = described.get("properties") or {}
        return CollectionInfo(name, str(props[EMBEDDING_MODEL_PROPERTY]) if props.get(EMBEDDING_MODEL_PROPERTY) else
                              None, int(vector.get("params", {})["dim"]), _int(props.get(CHUNK_SIZE_PROPERTY)),
                              _int(props.get(CHUNK_OVERLAP_PROPERTY)), int(counted[0]["count(*)"]) if counted else 0)

    def fields(self, name: str) -> list[str]:
        with mapped_errors(f"describing collection {name!r}"):
            return [str(f.get("name")) for f in self.client.describe_collection(name).get("fields", [])]

    def next_name(self, model_id: str, taken: Iterable[str] = ()) -> str:
        """``<alias>__<slug>__<n>``: ``n`` one more than any collection of the alias has or had (``taken``: names
        used before, dropped since: a name never comes back with another model)."""
        names = [*self.family(), *taken]
        numbers = [int(m.group(1)) for n in names if (m := re.search(r"__(\d+)$", n))]
        suffix = f"__{max(numbers, default=0) + 1}"
        return f"{self.alias}__{model_slug(model_id)}"[:_MAX_NAME - len(suffix)] + suffix

    # ---- changing ----
    def open(self, name: str, dimension: int, embedding_model: str | None = None) -> ChunkStore:
        """A store bound to collection ``name`` (created for ``embedding_model`` when missing)."""
        store = ChunkStore(self.client, name, dimension, embedding_model=embedding_model)
        store.ensure_collection()
        return store

    def record_chunking(self, name: str, chunk_size: int | None, chunk_overlap: int | None) -> None:
        if chunk_size is None or chunk_overlap is None:
            return
        with mapped_errors(f"recording the chunking of {name!r}"):
            self.client.alter_collection_properties(name, properties={CHUNK_SIZE_PROPERTY: str(chunk_size),
                                                                      CHUNK_OVERLAP_PROPERTY: str(chunk_overlap)})

    def adopt(self, new_name: str) -> None:
        """Turn a collection called like the alias into ``new_name`` with the alias pointing at it. Two calls:
        requests that reach Milvus between them (milliseconds) find no collection of that name."""
        with mapped_errors(f"renaming collection {self.alias!r} to {new_name!r}"):
            self.client.rename_collection(self.alias, new_name)
        with mapped_errors(f"creating the alias {self.alias!r}"):
            self.client.create_alias(new_name, self.alias)

    def point_alias(self, name: str) -> None:
        """Move (or create) the alias to ``name``: readers see one collection or the other, never none."""
        with mapped_errors(f"pointing the alias {self.alias!r} at {name!r}"):
            if self.live_name() is None:
                self.client.create_alias(name, self.alias)
            else:
                self.client.alter_alias(name, self.alias)

    def drop(self, name: str) -> None:
        if name == self.alias:
            raise InvalidInput(f"{name!r} is the alias (or the live collection itself); name a collection of "
                               f"`rag-cli index list`", field="name")
        if name == self.live_name():
            raise Conflict(f"collection {name!r} is live; switch to another one first", field="name")
        with mapped_errors(f"dropping collection {name!r}"):
            self.client.drop_collection(name)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
