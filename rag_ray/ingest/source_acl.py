"""Permissions from the source: a file's owner, group and mode, or a row's owner and group columns, become the ACL
stamped on its chunks (instead of one ACL for a whole job).

Files (``RAG_SOURCE_ACL_MAP``, JSON; ``{}``: off)::

    {"unix_users": {"alice": "alice", "1001": "u_4f…"},   # file owner (name or uid) → rag-ray user (id or username)
     "unix_groups": {"eng": "eng", "2001": "sales"},      # file group (name or gid) → rag-ray group (id or name)
     "world_readable": "public"}                          # o+r files are public (omit: the mode's o+r is ignored)

- owner: the mapped user of the file's owner, else the job's owner;
- a group-readable (g+r) file whose group is mapped: visibility ``group`` with that group;
- a world-readable (o+r) file, when ``world_readable`` is ``public``: visibility ``public``;
- anything else: ``private`` to its owner. Nothing unmapped is ever widened.

Rows (``owner_column`` / ``group_column`` of an RDB sync): in a table having either column, a row's owner is the user
its owner column names (user id or username; empty: the job's owner) and its groups those its group column names
(group ids or names, comma separated); visibility ``group`` when it has groups, else ``private``. Tables with neither
column keep the job's ACL. Names that match no user or group are stamped as they are (only admins match them).

A change at the source reaches the chunks on the next sync: a row whose owner or group changes is written again with
its new ACL (the row's hash covers it); a file whose owner, group or mode changes keeps its content and vectors and
only has its ACL fields rewritten (``rag_ray.access.sharing.set_document_acl``).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import select

from rag_ray.config import Settings
from rag_ray.errors import ConfigError
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import Group, User
from rag_ray.store.milvus import MAX_GROUPS_PER_CHUNK
from rag_ray.types import Acl

SETTING = "RAG_SOURCE_ACL_MAP"


class SourceAclMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    unix_users: dict[str, str] = {}
    unix_groups: dict[str, str] = {}
    world_readable: Literal["public"] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceAclMap | None:
        """The configured map (None when ``RAG_SOURCE_ACL_MAP`` is unset or empty)."""
        if not settings.source_acl_map:
            return None
        try:
            return cls.model_validate(settings.source_acl_map)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(f"{SETTING}: {where}: {first.get('msg', 'invalid')}", field=SETTING) from None

    def resolved(self, db: MetadataDB) -> SourceAclMap:
        """This map with rag-ray usernames and group names replaced by their ids (unknown names kept as they are)."""
        users, groups = identity_index(db)
        return self.model_copy(update={"unix_users": {k: users.get(v, v) for k, v in self.unix_users.items()},
                                       "unix_groups": {k: groups.get(v, v) for k, v in self.unix_groups.items()}})

    def acl_for(self, path: Path, fallback: Acl) -> Acl:
        """The ACL of the file at ``path`` (its owner, group and mode now)."""
        info = os.stat(path)
        owner = _lookup(self.unix_users, info.st_uid, _user_name) or fallback.owner_id
        group = _lookup(self.unix_groups, info.st_gid, _group_name) if info.st_mode & stat.S_IRGRP else None
        groups = (group,) if group else ()
        if self.world_readable == "public" and info.st_mode & stat.S_IROTH:
            return Acl(owner, groups, "public")
        return Acl(owner, groups, "group") if groups else Acl(owner, (), "private")


def _lookup(mapping: Mapping[str, str], number: int, name_of: Any) -> str | None:
    name = name_of(number)
    return (mapping.get(name) if name is not None else None) or mapping.get(str(number))


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers, NFS)
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def identity_index(db: MetadataDB) -> tuple[dict[str, str], dict[str, str]]:
    """(username or user id → user id, group name or id → group id)."""
    with db.session() as s:
        users = {k: v for uid, name in s.execute(select(User.user_id, User.username)) for k, v in
                 ((uid, uid), (name, uid))}
        groups = {k: v for gid, name in s.execute(select(Group.group_id, Group.name)) for k, v in
                  ((gid, gid), (name, gid))}
    return users, groups


@dataclass(frozen=True)
class RowAcl:
    """Which columns of a row name its owner and groups, and how names map to ids (travels to Ray workers)."""

    owner_column: str | None = None
    group_column: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, db: MetadataDB, owner_column: str | None, group_column: str | None) -> RowAcl | None:
        if not owner_column and not group_column:
            return None
        users, groups = identity_index(db)
        return cls(owner_column or None, group_column or None, users, groups)

    def acl_for(self, row: Mapping[str, Any], fallback: Acl) -> Acl:
        """The row's ACL; ``fallback`` (the job's) for a table with neither column."""
        owner_key, group_key = _column(row, self.owner_column), _column(row, self.group_column)
        if owner_key is None and group_key is None:
            return fallback
        owner_value = _text(row.get(owner_key)) if owner_key else ""
        owner = self.users.get(owner_value, owner_value) if owner_value else fallback.owner_id
        names = [g.strip() for g in _text(row.get(group_key)).split(",")] if group_key else []
        groups = tuple(dict.fromkeys(self.groups.get(g, g) for g in names if g))[:MAX_GROUPS_PER_CHUNK]
        return Acl(owner, groups, "group") if groups else Acl(owner, (), "private")


def _column(row: Mapping[str, Any], wanted: str | None) -> str | None:
    """The row's key for column ``wanted`` (matched case-insensitively, as ``incremental_column`` is)."""
    if not wanted:
        return None
    if wanted in row:
        return wanted
    return next((k for k in row if k.lower() == wanted.lower()), None)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
