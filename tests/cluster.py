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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jobs.ray_executor import WORKER_SOFT_LIMIT_ENV, worker_soft_limit
from rag_ray.store.lite_server import free_port

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
NODES_UP_S = 420  # a busy 2-core machine may take minutes to start a raylet
START_ATTEMPTS = 3  # per node, see start_with_retries
STARTED = b"Ray runtime started."  # what `ray start` prints once its node runs
_T = TypeVar("_T")
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


@dataclass(frozen=True)
class Node:
    """One ``ray start --block`` process (its own process group) and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    log: Path

    def exited(self) -> NodeExited | None:
        if self.proc.poll() is None:
            return None
        return NodeExited(f"`ray start` exited with {self.proc.returncode} while starting its node; "
                          f"its output ends:\n{self.output_tail()}")

    def output_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no output)"


class NodeExited(AssertionError):
    """A node's ``ray start`` ended before the node came up (for example a port another process took first)."""


def start_node(args: list[str], env: Mapping[str, str], log: Path, cores: frozenset[int] | None = None) -> Node:
    """``ray start --block`` in its own process group, its output in ``log``; with ``cores``, the node and every
    process it starts (GCS, raylet, workers) run on those cores only, as on a machine of that size."""
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *_node_ports(), *args],
                                env=dict(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=pin)
    return Node(proc, log)


def stop_node(node: Node) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.proc.pid, signal.SIGTERM)
    try:
        node.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=30)


def _raise_if_exited(nodes: Sequence[Node]) -> None:
    for node in nodes:
        if exited := node.exited():
            raise exited


def wait_for_nodes(env: Mapping[str, str], dashboard: str, count: int, nodes: Sequence[Node]) -> None:
    """Until ``count`` nodes are alive (a CLI call that hangs is retried)."""
    deadline = time.monotonic() + NODES_UP_S
    while time.monotonic() < deadline:
        _raise_if_exited(nodes)
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):  # no JSON before the dashboard is up
            listed = ray_cli(["list", "nodes", f"--address={dashboard}", "--format=json"], env, timeout=90)
            if listed.returncode == 0 and sum(n["state"] == "ALIVE" for n in json.loads(listed.stdout)) >= count:
                return
        time.sleep(1)  # nodes register with the GCS asynchronously
    raise AssertionError(f"{count} ray nodes did not come up")


def wait_started(node: Node) -> None:
    """Until ``ray start`` says its node runs (for a head: its GCS, raylet and dashboard if any are up)."""
    deadline = time.monotonic() + NODES_UP_S
    while time.monotonic() < deadline:
        _raise_if_exited([node])
        if STARTED in node.log.read_bytes():
            return
        time.sleep(0.5)
    raise AssertionError(f"`ray start` did not start its node in {NODES_UP_S} s; its output ends:\n"
                         f"{node.output_tail()}")


@contextlib.contextmanager
def local_cluster(home: Path, nodes: int = 2, *, extra_env: Mapping[str, str] | None = None,
                  dashboard: bool = True, cores: Sequence[frozenset[int]] = ()) -> Iterator[Cluster]:
    """A head and ``nodes - 1`` more raylets, 1 CPU each; all stopped on exit. ``dashboard=False``: no dashboard (a
    lighter head), so ``Cluster.dashboard`` is empty and the caller waits for the raylets through the GCS.
    ``cores``: the i-th node's processes run on ``cores[i]`` only (a node left out runs anywhere)."""
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", WORKER_SOFT_LIMIT_ENV: str(worker_soft_limit(1)),  # as cluster.yaml
           **NO_DRAIN, **(extra_env or {})}
    env.pop("RAY_ADDRESS", None)
    temp = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))  # unix socket paths must stay under 107 bytes
    starter = _Starter(env, temp, dashboard, [*cores, *[None] * nodes])
    try:
        head = starter.head()
        for _ in range(1, nodes):
            starter.worker(head)
        yield Cluster(env, f"127.0.0.1:{head.gcs_port}", head.url)
    finally:
        for node in reversed(starter.nodes):
            stop_node(node)
        shutil.rmtree(temp, ignore_errors=True)


def start_with_retries(start: Callable[[int], _T]) -> _T:
    """``start(attempt)`` until it does not raise NodeExited, at most ``START_ATTEMPTS`` times."""
    for attempt in range(1, START_ATTEMPTS):
        try:
            return start(attempt)
        except NodeExited as exited:
            print(f"retrying a ray node's start ({attempt}/{START_ATTEMPTS}): {exited}", file=sys.stderr)
    return start(START_ATTEMPTS)


@dataclass(frozen=True)
class _Head:
    gcs_port: int
    url: str  # the dashboard's, or empty without one


class _Starter:
    """Starts a cluster's nodes one at a time, each until it is up. A node whose ``ray start`` exits while starting
    is started afresh on new ports, up to ``START_ATTEMPTS`` times: the ports are picked free but another process
    (the test session's own Ray, say) may bind one first; CI met a node that exited while starting."""

    def __init__(self, env: Mapping[str, str], temp: Path, dashboard: bool,
                 cores: Sequence[frozenset[int] | None]) -> None:
        self.env, self.temp, self.dashboard, self.cores = env, temp, dashboard, cores
        self.nodes: list[Node] = []

    def head(self) -> _Head:
        return start_with_retries(self._start_head)

    def worker(self, head: _Head) -> None:
        start_with_retries(lambda attempt: self._start_worker(head, attempt))

    def _start_head(self, attempt: int) -> _Head:
        gcs_port, dash_port = free_port(), free_port()
        head = _Head(gcs_port, f"http://127.0.0.1:{dash_port}" if self.dashboard else "")
        web = [f"--dashboard-port={dash_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1"] \
            if self.dashboard else ["--include-dashboard=false"]
        node = self._start(["--head", f"--port={gcs_port}", "--num-cpus=1", *web, f"--temp-dir={self.temp}"],
                           f"head-{attempt}")
        self._until_up(node, lambda: self._wait(node, head, 1))
        return head

    def _start_worker(self, head: _Head, attempt: int) -> None:
        count = len(self.nodes) + 1
        node = self._start([f"--address=127.0.0.1:{head.gcs_port}", "--num-cpus=1"], f"node{count}-{attempt}")
        self._until_up(node, lambda: self._wait(node, head, count))

    def _wait(self, node: Node, head: _Head, count: int) -> None:
        """Until ``node`` runs and, with a dashboard, ``count`` nodes are alive in it (without one the driver waits
        for the raylets through the GCS)."""
        wait_started(node)
        if self.dashboard:
            wait_for_nodes(self.env, head.url, count, self.nodes)

    def _start(self, args: list[str], name: str) -> Node:
        node = start_node(args, self.env, self.temp / f"{name}.log", self.cores[len(self.nodes)])
        self.nodes.append(node)
        return node

    def _until_up(self, node: Node, wait: Callable[[], None]) -> None:
        try:
            wait()
        except NodeExited as exited:
            if node.proc.poll() is None:  # an earlier node died: starting this one again cannot help
                raise AssertionError(str(exited)) from exited
            self.nodes.remove(node)
            stop_node(node)  # whatever it started before it exited
            raise
