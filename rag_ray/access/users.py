"""User, group, membership and API key management (the admin API and `rag-cli user` call these).

Users and groups are addressed by id or by name (``ref``). Group ids are what chunks carry in ``group_ids``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from rag_ray.access.passwords import hash_password
from rag_ray.errors import Conflict, InvalidInput, NotFound
from rag_ray.metadata import MetadataDB
from rag_ray.metadata.models import ApiKey, Group, Membership, User

ROLES = ("admin", "user", "viewer")
API_KEY_PREFIX = "rr_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


@dataclass(frozen=True)
class UserInfo:
    user_id: str
    username: str
    email: str | None
    role: str
    active: bool
    group_ids: tuple[str, ...]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "username": self.username, "email": self.email, "role": self.role,
                "active": self.active, "group_ids": list(self.group_ids), "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class GroupInfo:
    group_id: str
    name: str
    description: str
    member_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"group_id": self.group_id, "name": self.name, "description": self.description,
                "member_ids": list(self.member_ids), "member_count": len(self.member_ids)}


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "user_id": self.user_id, "name": self.name, "prefix": self.prefix,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None, "revoked": self.revoked}


@dataclass(frozen=True)
class NewApiKey:
    """A freshly made key: ``key`` is shown once and never stored."""

    info: ApiKeyInfo
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.info.to_dict(), "key": self.key}


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def hash_api_key(key: str) -> str:
    # API keys carry 256 random bits, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _check_name(value: str, field: str) -> str:
    if not _NAME.match(value or ""):
        raise InvalidInput(f"{field} must be 1-128 letters, digits or _.@- (starting with a letter or digit)",
                           field=field)
    return value


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


# ---- lookups ----
def find_user(session: Session, ref: str) -> User:
    user = session.get(User, ref) or session.scalar(select(User).where(User.username == ref))
    if user is None:
        raise NotFound(f"no user {ref!r}", field="user")
    return user


def find_group(session: Session, ref: str) -> Group:
    group = session.get(Group, ref) or session.scalar(select(Group).where(Group.name == ref))
    if group is None:
        raise NotFound(f"no group {ref!r}", field="group")
    return group


def group_ids_of(session: Session, user_id: str) -> tuple[str, ...]:
    rows = session.scalars(select(Membership.group_id).where(Membership.user_id == user_id))
    return tuple(sorted(rows))


def _user_info(session: Session, user: User) -> UserInfo:
    return UserInfo(user.user_id, user.username, user.email, user.role, bool(user.is_active),
                    group_ids_of(session, user.user_id), aware(user.created_at))


def _group_info(session: Session, group: Group) -> GroupInfo:
    members = session.scalars(select(Membership.user_id).where(Membership.group_id == group.group_id))
    return GroupInfo(group.group_id, group.name, group.description, tuple(sorted(members)))


def _key_info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(key.key_id, key.user_id, key.name, key.prefix, aware(key.created_at),
                      aware(key.expires_at) if key.expires_at else None, key.revoked_at is not None)


# ---- users ----
def create_user(db: MetadataDB, username: str, password: str, *, email: str | None = None, role: str = "user",
                active: bool = True) -> UserInfo:
    _check_name(username, "username")
    _check_role(role)
    password_hash = hash_password(password)
    with db.session() as s:
        if s.scalar(select(User).where(User.username == username)) is not None:
            raise Conflict(f"user {username!r} already exists", field="username")
        user = User(user_id="u_" + uuid.uuid4().hex[:20], username=username, email=email or None,
                    password_hash=password_hash, role=role, is_active=active)
        s.add(user)
        s.flush()
        return _user_info(s, user)


def get_user(db: MetadataDB, ref: str) -> UserInfo:
    with db.session() as s:
        return _user_info(s, find_user(s, ref))


def list_users(db: MetadataDB, role: str | None = None, active: bool | None = None) -> list[UserInfo]:
    query = select(User).order_by(User.username)
    if role is not None:
        query = query.where(User.role == role)
    if active is not None:
        query = query.where(User.is_active == active)
    with db.session() as s:
        return [_user_info(s, u) for u in s.scalars(query)]


def _refuse_last_admin(session: Session, user: User) -> None:
    admins = session.scalar(select(func.count()).select_from(User).where(User.role == "admin",
                                                                         User.is_active.is_(True)))
    if user.role == "admin" and user.is_active and (admins or 0) <= 1:
        raise Conflict("refusing to demote or deactivate the last active admin", field="user")


def set_active(db: MetadataDB, ref: str, active: bool) -> UserInfo:
    with db.session() as s:
        user = find_user(s, ref)
        if not active:
            _refuse_last_admin(s, user)
        user.is_active = active
        return _user_info(s, user)


def set_role(db: MetadataDB, ref: str, role: str) -> UserInfo:
    _check_role(role)
    with db.session() as s:
        user = find_user(s, ref)
        if role != "admin":
            _refuse_last_admin(s, user)
        user.role = role
        return _user_info(s, user)


def set_password(db: MetadataDB, ref: str, password: str) -> None:
    password_hash = hash_password(password)
    with db.session() as s:
        find_user(s, ref).password_hash = password_hash


# ---- groups ----
def create_group(db: MetadataDB, name: str, *, description: str = "", group_id: str | None = None) -> GroupInfo:
    _check_name(name, "name")
    group_id = _check_name(group_id, "group_id") if group_id else name
    with db.session() as s:
        clash = s.scalar(select(Group).where(or_(Group.name == name, Group.group_id == group_id)))
        if clash is not None:
            raise Conflict(f"group {name!r} already exists", field="name")
        group = Group(group_id=group_id, name=name, description=description[:1024])
        s.add(group)
        s.flush()
        return _group_info(s, group)


def list_groups(db: MetadataDB) -> list[GroupInfo]:
    with db.session() as s:
        return [_group_info(s, g) for g in s.scalars(select(Group).order_by(Group.name))]


def get_group(db: MetadataDB, ref: str) -> GroupInfo:
    with db.session() as s:
        return _group_info(s, find_group(s, ref))


def add_member(db: MetadataDB, user_ref: str, group_ref: str) -> GroupInfo:
    with db.session() as s:
        user, group = find_user(s, user_ref), find_group(s, group_ref)
        if s.get(Membership, (user.user_id, group.group_id)) is None:
            s.add(Membership(user_id=user.user_id, group_id=group.group_id))
            s.flush()
        return _group_info(s, group)


def remove_member(db: MetadataDB, user_ref: str, group_ref: str) -> GroupInfo:
    with db.session() as s:
        user, group = find_user(s, user_ref), find_group(s, group_ref)
        membership = s.get(Membership, (user.user_id, group.group_id))
        if membership is None:
            raise NotFound(f"{user.username!r} is not a member of {group.name!r}", field="user")
        s.delete(membership)
        s.flush()
        return _group_info(s, group)


def resolve_group_ids(db: MetadataDB, refs: list[str]) -> tuple[str, ...]:
    """Group ids for ids or names; unknown ones are an InvalidInput naming ``group_ids``."""
    out: list[str] = []
    with db.session() as s:
        for ref in refs:
            try:
                out.append(find_group(s, ref).group_id)
            except NotFound:
                raise InvalidInput(f"unknown group {ref!r}", field="group_ids") from None
    return tuple(dict.fromkeys(out))


# ---- API keys ----
def create_api_key(db: MetadataDB, user_ref: str, *, name: str = "", expires_days: int | None = None) -> NewApiKey:
    if expires_days is not None and expires_days < 1:
        raise InvalidInput("expires_days must be at least 1", field="expires_days")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    with db.session() as s:
        user = find_user(s, user_ref)
        record = ApiKey(key_id="k_" + uuid.uuid4().hex[:20], user_id=user.user_id, name=name[:128],
                        key_hash=hash_api_key(key), prefix=key[:10], expires_at=expires)
        s.add(record)
        s.flush()
        return NewApiKey(_key_info(record), key)


def list_api_keys(db: MetadataDB, user_ref: str | None = None) -> list[ApiKeyInfo]:
    with db.session() as s:
        query = select(ApiKey).order_by(ApiKey.created_at)
        if user_ref is not None:
            query = query.where(ApiKey.user_id == find_user(s, user_ref).user_id)
        return [_key_info(k) for k in s.scalars(query)]


def get_api_key(db: MetadataDB, key_id: str) -> ApiKeyInfo:
    with db.session() as s:
        record = s.get(ApiKey, key_id)
        if record is None:
            raise NotFound(f"no API key {key_id!r}", field="key_id")
        return _key_info(record)


def revoke_api_key(db: MetadataDB, key_id: str) -> ApiKeyInfo:
    with db.session() as s:
        record = s.get(ApiKey, key_id)
        if record is None:
            raise NotFound(f"no API key {key_id!r}", field="key_id")
        record.revoked_at = record.revoked_at or datetime.now(UTC)
        return _key_info(record)
