"""Local multi-node Ray clusters on this machine, for the multi-node tests and `bench/scaleout.py`.

Every node is `ray start --block` in its own process group with its own ports, so stopping it stops exactly that
node — never `ray stop`, which kills every Ray process on the machine (the test session's own Ray included). Ray
2.60 turns on token authentication with `ray start --head`; drivers and the CLI get the token through ``env``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.ray_executor import WORKER_SOFT_LIMIT_ENV, worker_soft_limit
from rag_ray.store.lite_server import free_port

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
NODES_UP_S = 420  # a busy 2-core machine may take minutes to start a raylet
# On SIGTERM `ray start` first asks the GCS to drain its node (up to 30 s) — but the head's GCS got the same SIGTERM
# from the process group, so the head's drain call hangs its full 30 s: a two-node teardown took 34.9 s, 4.8 s without.
NO_DRAIN = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]  # for drivers and the `ray` CLI: the auth token, no inherited RAY_ADDRESS
    address: str  # the GCS, host:port
    dashboard: str  # http URL (job submission and the state API)


def ray_cli(args: list[str], env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAY, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def state(kind: str, cluster: Cluster) -> list[dict[str, Any]]:
    """Ray's state API: ``nodes``, ``tasks``, ``actors`` … of the cluster."""
    out = ray_cli(["list", kind, f"--address={cluster.dashboard}", "--format=json", "--limit=10000", "--detail"],
                  cluster.env)
    assert out.returncode == 0, out.stderr[-2000:]
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def _node_ports() -> list[str]:
    """Fresh ports for each raylet's agents: the defaults collide with any other Ray on this machine."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]


def start_node(args: list[str], env: Mapping[str, str], cores: frozenset[int] | None = None
               ) -> subprocess.Popen[bytes]:
    """``ray start --block`` in its own process group; with ``cores``, the node and every process it starts (GCS,
    raylet, workers) run on those cores only, as on a machine of that size."""
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *_node_ports(), *args], env=dict(env),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=pin)


def stop_node(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def wait_for_nodes(env: Mapping[str, str], dashboard: str, count: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until ``count`` nodes are alive (a CLI call that hangs is retried)."""
    deadline = time.monotonic() + NODES_UP_S
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a ray node exited while starting"
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):  # no JSON before the dashboard is up
            listed = ray_cli(["list", "nodes", f"--address={dashboard}", "--format=json"], env, timeout=90)
            if listed.returncode == 0 and sum(n["state"] == "ALIVE" for n in json.loads(listed.stdout)) >= count:
                return
        time.sleep(1)  # nodes register with the GCS asynchronously
    raise AssertionError(f"{count} ray nodes did not come up")


@contextlib.contextmanager
def local_cluster(home: Path, nodes: int = 2, *, extra_env: Mapping[str, str] | None = None,
                  dashboard: bool = True, cores: Sequence[frozenset[int]] = ()) -> Iterator[Cluster]:
    """A head and ``nodes - 1`` more raylets, 1 CPU each; all stopped on exit. ``dashboard=False``: no dashboard (a
    lighter head), so ``Cluster.dashboard`` is empty and the caller waits for the raylets through the GCS.
    ``cores``: the i-th node's processes run on ``cores[i]`` only (a node left out runs anywhere)."""
    gcs_port, dash_port = free_port(), free_port()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", WORKER_SOFT_LIMIT_ENV: str(worker_soft_limit(1)),  # as cluster.yaml
           **NO_DRAIN, **(extra_env or {})}
    env.pop("RAY_ADDRESS", None)
    temp = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))  # unix socket paths must stay under 107 bytes
    url = f"http://127.0.0.1:{dash_port}" if dashboard else ""
    web = [f"--dashboard-port={dash_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1"] if dashboard \
        else ["--include-dashboard=false"]
    wait_up = _nodes_waiter(env, url, gcs_port)
    pinned = [*cores, *[None] * nodes]
    procs = [start_node(["--head", f"--port={gcs_port}", "--num-cpus=1", *web, f"--temp-dir={temp}"], env, pinned[0])]
    try:
        wait_up(1, procs)
        for node in range(1, nodes):
            procs.append(start_node([f"--address=127.0.0.1:{gcs_port}", "--num-cpus=1"], env, pinned[node]))
        wait_up(nodes, procs)
        yield Cluster(env, f"127.0.0.1:{gcs_port}", url)
    finally:
        for proc in reversed(procs):
            stop_node(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _nodes_waiter(env: Mapping[str, str], dashboard: str, gcs_port: int
                  ) -> Callable[[int, list[subprocess.Popen[bytes]]], None]:
    """Waits until ``count`` nodes are up: through the dashboard's state API, or without a dashboard until the
    head's GCS answers (the driver then waits for the other raylets through the GCS itself)."""
    if dashboard:
        return lambda count, procs: wait_for_nodes(env, dashboard, count, procs)
    return lambda _count, procs: wait_for_port(gcs_port, procs[0])


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the head's GCS accepts connections (it opens its port once it is up)."""
    deadline = time.monotonic() + NODES_UP_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the ray head exited while starting"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            return
        time.sleep(0.5)
    raise AssertionError("the ray head's GCS did not come up")
