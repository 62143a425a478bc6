"""The caller whose limits and budgets an LLM call is charged to, bound per HTTP request by the guard dependency
(``rag_ray.api.guard``). LLM calls made outside a request (jobs, the CLI, health probes) have no caller and are not
metered."""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass

from rag_ray.observability.context import bound
from rag_ray.types import Principal

# route classes: what a requests-per-period limit counts (``all``: every route together)
ROUTE_CLASSES = ("auth", "llm", "retrieval", "ingest", "admin", "other")
ALL = "all"


@dataclass(frozen=True)
class Caller:
    principal: Principal
    key_id: str | None = None  # the API key it authenticated with (None: a JWT)
    route_class: str = "other"

    def subjects(self) -> list[tuple[str, str]]:
        """Whose limits apply: the user, the API key, every group of the user."""
        found = [("user", self.principal.user_id)]
        if self.key_id:
            found.append(("key", self.key_id))
        found.extend(("group", g) for g in dict.fromkeys(self.principal.group_ids))
        return found


caller_var: ContextVar[Caller | None] = ContextVar("rag_guard_caller", default=None)


def current_caller() -> Caller | None:
    return caller_var.get()


def bind_caller(caller: Caller) -> None:
    caller_var.set(caller)


def calling_as(caller: Caller) -> AbstractContextManager[Caller]:
    return bound(caller_var, caller)
