"""Who is acting: bound once per HTTP request (the guard dependency), per CLI command or per job, read by the audit
log and the ORM audit hooks. A ``contextvar``, so it follows ``await``, ``asyncio.to_thread`` and the threadpool that
runs sync route handlers."""

from __future__ import annotations

import getpass
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass

from rag_ray.observability.context import bound, current_job_id, current_request_id


@dataclass(frozen=True)
class Actor:
    """``user_id`` None: not signed in (a login attempt) or not a user (the CLI, a job, the server itself)."""

    user_id: str | None = None
    name: str = ""
    address: str | None = None  # the client address of an HTTP request
    request_id: str | None = None  # set when the request-id middleware did not bind one


actor_var: ContextVar[Actor | None] = ContextVar("rag_audit_actor", default=None)


def current_actor() -> Actor:
    """The bound actor; unbound: the job being run (``job:<id>``), else ``system``."""
    actor = actor_var.get()
    if actor is not None:
        return actor
    job_id = current_job_id()
    return Actor(name=f"job:{job_id}" if job_id else "system")


def bind_actor(actor: Actor) -> None:
    """Bind for the rest of the current context (an HTTP request's task: it ends with the request)."""
    actor_var.set(actor)


def acting_as(actor: Actor) -> AbstractContextManager[Actor]:
    return bound(actor_var, actor)


def cli_actor() -> Actor:
    """The operator running ``rag-cli``: the OS account name (no rag-ray user signs in to the CLI)."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (containers)
        who = "unknown"
    return Actor(name=f"cli:{who}"[:128])


def request_id_of(actor: Actor) -> str | None:
    return current_request_id() or actor.request_id
