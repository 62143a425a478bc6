"""What Ray reserved for the replica this code runs in: model replicas size their threads from it."""

from __future__ import annotations

import ray


def reserved_cpus() -> float:
    """CPUs Ray reserved for this process (a replica's ``num_cpus``); 0 outside a Ray worker."""
    if not ray.is_initialized():  # asking for the runtime context would start a Ray
        return 0.0
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return 0.0
    return float(context.get_assigned_resources().get("CPU", 0.0))
