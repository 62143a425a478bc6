"""Milvus Lite as its own gRPC server process, so every Ray worker can reach one store.

An in-process ``MilvusClient("x.db")`` locks the file to one process; ``milvus-lite server`` does not.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from rag_ray.errors import StoreError


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _executable() -> list[str]:
    exe = shutil.which("milvus-lite") or str(Path(sys.executable).with_name("milvus-lite"))
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "milvus_lite.cli"]


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
        log = open(self.data_dir / "milvus-lite.log", "ab")  # noqa: SIM115 - the child owns it
        cmd = [*_executable(), "server", "--data-dir", str(self.data_dir), "--host", self.host,
               "--port", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
