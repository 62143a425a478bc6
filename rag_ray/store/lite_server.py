"""Milvus Lite as its own gRPC server process, so every Ray worker can reach one store.

An in-process ``MilvusClient("x.db")`` locks the file to one process; ``milvus-lite server`` does not.

Lifecycle: the server runs in its own session (a Ctrl-C in the terminal reaches only its parent, which stops it in
order), and dies with its parent: on Linux the kernel sends it SIGKILL when the process that started it ends, however
that ends (SIGKILL included), so no Milvus Lite outlives the server, CLI command or job that started it.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rag_ray.errors import StoreError


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


# Ports picked below the kernel's ephemeral range (what a port-0 bind gets; Ray's processes bind many such ports as they
# start) and above Ray's worker ports (10002–19999): a port-0 pick once lost that race in CI between being picked and
# being bound by Serve's proxy ("Failed to bind to address").
PICK_FROM = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A free local port that no port-0 bind or Ray worker will take before its user binds it."""
    below = ephemeral_start()
    for _ in range(64):
        port = random.randrange(PICK_FROM, below) if below > PICK_FROM else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use: try another
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free local port in {PICK_FROM}–{below - 1}")


def ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA default
        return 49152


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies (Linux ``PR_SET_PDEATHSIG``); None
    where the kernel has no such thing. The signal follows the parent *thread* that forked the child, so start and stop
    a child from one long-lived thread (every caller here does: the CLI's main thread, or the job thread that owns it).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will signal us
            os._exit(1)

    return preexec


def _executable() -> list[str]:
    exe = shutil.which("milvus-lite") or str(Path(sys.executable).with_name("milvus-lite"))
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "milvus_lite"]


class MilvusLiteServer:
    """Starts (or reuses) a Milvus Lite server on 127.0.0.1:port with data under ``data_dir``."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1"):
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> MilvusLiteServer:
        if port_open(self.host, self.port):
            return self  # already running (another CLI process or a previous start)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "milvus-lite.log", "ab")  # noqa: SIM115 - closed once the child has it
        cmd = [*_executable(), "server", "--data-dir", str(self.data_dir), "--host", self.host,
               "--port", str(self.port)]
        try:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent())
        finally:
            log.close()  # the child has its own copy
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StoreError(f"milvus-lite server exited with {self._proc.returncode}; "
                                 f"see {self.data_dir / 'milvus-lite.log'}")
            if port_open(self.host, self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise StoreError(f"milvus-lite server did not listen on {self.uri} within {timeout_s:.0f}s")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> MilvusLiteServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
