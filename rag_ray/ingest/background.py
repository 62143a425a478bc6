"""Run a job function in the background: a Ray task when Ray is up, else a daemon thread.

The function records its own outcome (job status, errors) in the metadata DB; what is logged here on
failure is only the exception type — messages may quote connection details.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def ray_is_initialized() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized())


def submit_background(fn: Callable[..., Any], *args: Any) -> Any:
    """Start ``fn(*args)``; returns the Ray ``ObjectRef`` or the started ``Thread``."""
    if ray_is_initialized():
        import ray

        # num_cpus=0: the driver mostly waits on the Ray Data pipeline it launches
        return ray.remote(num_cpus=0, max_retries=0)(fn).remote(*args)
    thread = threading.Thread(target=_guarded, args=(fn, args), daemon=True,
                              name=f"bg-{getattr(fn, '__name__', 'job')}")
    thread.start()
    return thread


def _guarded(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.warning("background job %s failed: %s", getattr(fn, "__name__", fn), type(exc).__name__)
