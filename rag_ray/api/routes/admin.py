"""Admin API: users, groups, memberships, API keys; and `PUT /documents/{doc_id}/acl` (owner or admin).

"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from rag_ray.access import sharing, users
from rag_ray.api.deps import PrincipalDep, ServicesDep, admin_principal
from rag_ray.errors import NotFound
from rag_ray.types import Acl

router = APIRouter()
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin_principal)])

Role = Literal["admin", "user", "viewer"]




class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=8, max_length=1024)
    email: str | None = Field(None, max_length=255)
    role: Role = "user"
    active: bool = True


class PatchUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    active: bool | None = None


class CreateGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    description: str = Field("", max_length=1024)
    group_id: str | None = Field(None, max_length=128)


class AddMember(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=128, description="user id or username")


class CreateApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(None, max_length=128, description="user id or username (default: yourself)")
    name: str = Field("", max_length=128)
    expires_days: int | None = Field(None, ge=1, le=3650)


class DocumentAcl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group_ids: list[str] = Field(default_factory=list, max_length=256)
    visibility: Literal["private", "group", "public"]
    owner_id: str | None = Field(None, max_length=128, description="admins only: hand the document over")


# ---- users ----
@admin.post("/users", status_code=201, summary="Create a user")
def create_user(body: CreateUser, services: ServicesDep) -> dict[str, Any]:
    return users.create_user(services.db, body.username, body.password, email=body.email,
                             role=body.role, active=body.active).to_dict()


@admin.get("/users", summary="List users (filters: role, active)")
def list_users(services: ServicesDep, role: str | None = None, active: bool | None = None) -> dict[str, Any]:
    found = users.list_users(services.db, role=role, active=active)
    return {"users": [u.to_dict() for u in found], "count": len(found)}


@admin.get("/users/{user_ref}", summary="One user by id or username")
def get_user(user_ref: str, services: ServicesDep) -> dict[str, Any]:
    return users.get_user(services.db, user_ref).to_dict()


@admin.patch("/users/{user_ref}", summary="Change a user's role or active flag (effective on their next request)")
def patch_user(user_ref: str, body: PatchUser, services: ServicesDep) -> dict[str, Any]:
    db = services.db
    if body.role is not None:
        users.set_role(db, user_ref, body.role)
    if body.active is not None:
        users.set_active(db, user_ref, body.active)
    return users.get_user(db, user_ref).to_dict()


# ---- groups ----
@admin.post("/groups", status_code=201, summary="Create a group")
def create_group(body: CreateGroup, services: ServicesDep) -> dict[str, Any]:
    return users.create_group(services.db, body.name, description=body.description,
                              group_id=body.group_id).to_dict()


@admin.get("/groups", summary="List groups with their members")
def list_groups(services: ServicesDep) -> dict[str, Any]:
    found = users.list_groups(services.db)
    return {"groups": [g.to_dict() for g in found], "count": len(found)}


@admin.get("/groups/{group_ref}", summary="One group by id or name")
def get_group(group_ref: str, services: ServicesDep) -> dict[str, Any]:
    return users.get_group(services.db, group_ref).to_dict()


@admin.post("/groups/{group_ref}/members", summary="Add a user to a group")
def add_member(group_ref: str, body: AddMember, services: ServicesDep) -> dict[str, Any]:
    return users.add_member(services.db, body.user, group_ref).to_dict()


@admin.delete("/groups/{group_ref}/members/{user_ref}", summary="Remove a user from a group")
def remove_member(group_ref: str, user_ref: str, services: ServicesDep) -> dict[str, Any]:
    return users.remove_member(services.db, user_ref, group_ref).to_dict()


# ---- API keys ----
@admin.post("/api-keys", status_code=201, summary="Create an API key (the key is shown once)")
def create_api_key(body: CreateApiKey, principal: PrincipalDep,
                   services: ServicesDep) -> dict[str, Any]:
    owner = body.user or principal.user_id
    return users.create_api_key(services.db, owner, name=body.name,
                                expires_days=body.expires_days).to_dict()


@admin.get("/api-keys", summary="List API keys (never the keys themselves)")
def list_api_keys(services: ServicesDep, user: str | None = None) -> dict[str, Any]:
    found = users.list_api_keys(services.db, user)
    return {"api_keys": [k.to_dict() for k in found], "count": len(found)}


@admin.delete("/api-keys/{key_id}", summary="Revoke an API key")
def revoke_api_key(key_id: str, services: ServicesDep) -> dict[str, Any]:
    return users.revoke_api_key(services.db, key_id).to_dict()


# ---- document sharing ----
@router.put("/documents/{doc_id}/acl", tags=["documents"],
            summary="Share a document with groups or change its visibility (owner or admin)")
def put_document_acl(doc_id: str, body: DocumentAcl, principal: PrincipalDep,
                     services: ServicesDep) -> dict[str, Any]:
    db, store = services.db, services.store
    owner = sharing.document_owner(db, store, doc_id)
    if owner is None or not sharing.may_change_acl(principal, owner):
        raise NotFound(f"no document {doc_id!r}", field="doc_id")  # others' documents look missing
    new_owner = body.owner_id if principal.is_admin and body.owner_id else owner
    acl = Acl(new_owner, users.resolve_group_ids(db, body.group_ids), body.visibility)
    updated = sharing.set_document_acl(db, store, doc_id, acl)
    return {"doc_id": doc_id, "owner_id": acl.owner_id, "group_ids": list(acl.group_ids),
            "visibility": acl.visibility, "chunks_updated": updated}


router.include_router(admin)
