"""The server's entry points and lifecycle, driven through the installed commands with real signals: `rag-server`,
`rag-cli serve [--reload]`, `main.py` and the image's `docker/entrypoint.sh` + `docker/healthcheck.py`, on the
one-process ``local`` platform with the fake models (a start takes seconds, not a model load)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from deployments.platform import DRAIN_VARIABLE
from rag_ray.cli.reloader import default_watch_dirs, server_argv
from rag_ray.cli.server_main import cli_argv
from rag_ray.config import Settings
from rag_ray.store.lite_server import free_port, port_open
from tests.job_helpers import wait_until
from tests.live_server import metric

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GRACE_S = 5.0
# the fake LLM streams its echo a word every half second: a 6-word question keeps a stream open ~3.5 s
SLOW_STREAM_LLM = json.dumps([{"id": "fake:echo", "options": {"token_delay_s": 0.5}}])
LONG_QUESTION = {"messages": [{"role": "user", "content": " ".join(["word"] * 6)}]}
# the echo takes a question's first 200 characters: 100 words, a ~50 s stream
ENDLESS_QUESTION = {"messages": [{"role": "user", "content": " ".join(["w"] * 100)}]}


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("LLM_", "EMBEDDING_", "MILVUS_", "RAG_", "API_", "APP_", "SECRET_", "DATABASE_"))}
    return {**base, "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}", "RAG_PLATFORM": "local",
            "RAG_DATA_DIR": str(tmp_path / "data"), "API_HOST": "127.0.0.1", "API_PORT": str(free_port()),
            "RAG_MILVUS_LITE_PORT": str(free_port()), "RAG_ADMIN_PASSWORD": "lifecycle-admin-pw",
            "RAG_SHUTDOWN_GRACE_S": str(GRACE_S), "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow",
            "LLM_PROVIDER": "fake", "LLM_MODEL": "echo", **extra}


class Server:
    """A server command as a child process (in its own session, so a failed test can clean up the whole group);
    signals in the tests go to the command's own pid only."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path):
        self.env = env
        self.url = f"http://127.0.0.1:{env['API_PORT']}"
        self.milvus_port = int(env["RAG_MILVUS_LITE_PORT"])
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def text(self) -> str:
        return "".join(self.output)

    def wait_healthy(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.text()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # polling a server that is still starting
        raise AssertionError(f"not healthy within {timeout_s}s:\n{self.text()}")

    def wait_line(self, pattern: str, timeout_s: float = 240) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}:\n{self.text()}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)  # Ray's have their own groups
            os.killpg(self.proc.pid, signal.SIGKILL)
            for process in descendants:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.cleanup()


def wait_closed(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while port_open("127.0.0.1", port):
        assert time.monotonic() < deadline, f"port {port} still open after {timeout_s}s"
        time.sleep(0.1)  # the kernel closes the socket when the process is gone


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], env=env, capture_output=True,
                          text=True, timeout=30)


# --- production refuses placeholder secrets, before starting anything ---

def test_production_refuses_placeholder_secrets_at_start(tmp_path):
    env = server_env(tmp_path, APP_ENV="production", SECRET_KEY="changeme", RAG_ADMIN_PASSWORD="changeme")
    commands = {"rag-server": [str(BIN / "rag-server")], "rag-cli serve": [str(BIN / "rag-cli"), "serve"],
                "main.py": [sys.executable, str(ROOT / "main.py")]}
    running = {name: subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for name, cmd in commands.items()}  # side by side: 3 interpreters
    for name, proc in running.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, f"{name}: {out}"
        assert "SECRET_KEY is missing, a placeholder, or shorter than 32 characters" in out, name
        assert "RAG_ADMIN_PASSWORD is a placeholder" in out, name
    assert not (tmp_path / "data" / "milvus").exists(), "Milvus Lite was started before the check"
    assert not port_open("127.0.0.1", int(env["API_PORT"]))


# --- the image's entry scripts, outside a container ---

def test_entrypoint_runs_the_server_healthcheck_passes_and_sigterm_stops_everything(tmp_path, servers):
    """`docker run IMAGE` = tini → docker/entrypoint.sh → exec rag-server; `docker stop` sends it SIGTERM."""
    env = server_env(tmp_path)
    server = Server(["sh", str(ROOT / "docker" / "entrypoint.sh")], env, tmp_path)
    servers.append(server)
    server.wait_healthy()
    assert port_open("127.0.0.1", server.milvus_port)
    check = healthcheck(env)
    assert check.returncode == 0, check.stderr

    server.signal(signal.SIGTERM)  # the exec'd rag-server itself, as tini forwards it
    assert server.proc.wait(timeout=GRACE_S + 10) == 0, server.text()  # 0: in order, not forced at the deadline
    assert not port_open("127.0.0.1", server.milvus_port), "Milvus Lite outlived the server"
    assert not port_open("127.0.0.1", int(env["API_PORT"]))
    down = healthcheck(env)
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_entrypoint_refuses_an_unwritable_data_dir_and_passes_other_commands_through(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = server_env(tmp_path, RAG_DATA_DIR=str(blocker / "data"))
    refused = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh")], env=env, capture_output=True, text=True,
                             timeout=30)
    assert refused.returncode == 73 and "not a writable directory" in refused.stderr

    env = server_env(tmp_path)
    passed = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), "python", "-c", "print('as given')"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert (passed.returncode, passed.stdout.strip()) == (0, "as given")


# --- nothing the server started outlives it ---

def test_sigkill_of_the_server_takes_milvus_lite_with_it(tmp_path, servers):
    """SIGKILL (Kubernetes after the grace period, the OOM killer): Milvus Lite, in its own session, still dies."""
    env = server_env(tmp_path)
    server = Server([str(BIN / "rag-server")], env, tmp_path)
    servers.append(server)
    server.wait_healthy()
    assert port_open("127.0.0.1", server.milvus_port)
    server.signal(signal.SIGKILL)
    server.proc.wait(timeout=30)
    wait_closed(server.milvus_port, timeout_s=10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_sent_to_uv_runs_process_group_stops_in_order(tmp_path, servers, sig):
    """The README's command, `uv run rag-cli serve`, stopped the way systemd (its control-group stop) or a terminal
    outside a TTY stops it: the signal goes to the whole process group, and uv forwards it to the server as well. One
    stop request, delivered twice, is an orderly stop (exit 0), not the forced one a second request means."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    env = {k: v for k, v in server_env(tmp_path).items() if k != "VIRTUAL_ENV"}  # uv warns about a foreign one
    server = Server([uv, "run", "--no-sync", "--project", str(ROOT), "rag-cli", "serve"], env, tmp_path)
    servers.append(server)
    server.wait_healthy()
    assert "Running upgrade" in server.text() and "setup plugin" not in server.text()  # no alembic set-up noise
    os.killpg(server.proc.pid, sig)  # the server's session: uv and the server itself
    assert server.proc.wait(timeout=GRACE_S + 30) == 0, server.text()[-3000:]
    assert "stopping now" not in server.text(), server.text()[-3000:]
    wait_closed(server.milvus_port, timeout_s=10)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


@pytest.mark.slow
def test_sigterm_on_the_ray_platform_stops_ray_and_milvus_in_order(tmp_path, servers):
    """Ray's C++ core worker installs a crash handler that aborts on SIGTERM (exit 134, no orderly stop); the server
    keeps its own handler in place, so SIGTERM lets the requests in flight finish through Serve's proxy (Serve's own
    shutdown closed the proxy at once) — a stream, and an ensemble whose evaluator call comes after the signal (the
    deployments stay up until the routers are done) — while new ones get 503, then stops Serve, the local Ray and
    Milvus Lite and exits 0, printing nothing that reads like a failure."""
    grace_s, in_flight_s = 60.0, 20.0  # Serve drains and Ray stops in ~15 s on 2 busy cores
    llms = json.dumps([*json.loads(SLOW_STREAM_LLM), {"id": "fake:slow", "options": {"delay_s": 4}}])
    env = {k: v for k, v in server_env(tmp_path, RAG_PLATFORM="ray", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
                                       RAG_SHUTDOWN_GRACE_S=str(grace_s), RAG_SHUTDOWN_IN_FLIGHT_S=str(in_flight_s),
                                       RAG_LLM_PROVIDERS=llms).items()
           if k != "RAY_ADDRESS"}
    server = Server([str(BIN / "rag-server")], env, tmp_path)
    servers.append(server)
    server.wait_healthy(timeout_s=600)
    children = _children(server.proc.pid)
    assert len(children) >= 3, "Milvus Lite, the GCS and the raylet at least"
    token = admin_token(server)
    with ThreadPoolExecutor(2) as pool:  # both LLMs answer, fake:slow after 4 s; then the evaluator scores them
        ensemble = pool.submit(httpx.post, f"{server.url}/generate/ensemble", timeout=60,
                               headers={"Authorization": f"Bearer {token}"},
                               json={"query": "what is in the index?", "ensemble_size": 2})
        # a ~50 s stream: still running when its 20 s are up, so it is cut and the stop goes on in order
        endless = pool.submit(stream_across, server, token, lambda: None, ENDLESS_QUESTION)
        wait_until(lambda: metric(server.url, "rag_http_requests_in_flight",
                                  headers={"Authorization": f"Bearer {token}"}) >= 3,
                   30, "the ensemble and the long stream in flight (and this scrape)")
        events = stream_across(server, token, lambda: _stop_refusing_new_requests(server))
        scored = ensemble.result()
        cut = endless.result()
    assert events[-1] == "event: done", events
    assert scored.status_code == 200 and scored.json()["response"], scored.text[:500]
    assert "event: done" not in cut and len(cut) < 90, cut  # ended after its time, not answered in full
    server.wait_line(rf"1 request\(s\) still running after {in_flight_s:g}s were cut \(RAG_SHUTDOWN_IN_FLIGHT_S\)")
    server.wait_line(r"drained in \d")  # the stop says when the routers were done, before Serve's own stop
    assert server.proc.wait(timeout=grace_s + 30) == 0, server.text()[-3000:]
    assert "graceful_shutdown failed" not in server.text()  # serve.shutdown()'s line at every stop: not an error
    deadline = time.monotonic() + 30
    while left := [pid for pid in children if _alive(pid)]:
        assert time.monotonic() < deadline, f"processes the server started outlived it: {left}"
        time.sleep(0.2)  # orphans finish exiting
    assert not port_open("127.0.0.1", server.milvus_port)


def _listening_pid(port: int) -> int | None:
    """The process accepting connections on ``port``, if any (one look at the kernel's socket table)."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid is not None:
            return int(conn.pid)
    return None


def _listener_cmdline(port: int, timeout_s: float = 30.0) -> list[str]:
    """The command line of the process accepting connections on ``port`` (127.0.0.1). Polled: Serve reloads HAProxy
    (a new process) as replicas come and go, and in CI one sample found no listener while the new process took the
    socket over, another found a listener that exited before its command line was read."""
    def cmdline() -> list[str] | None:
        pid = _listening_pid(port)
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(pid).cmdline() if pid is not None else None
        return None

    return list(wait_until(cmdline, timeout_s, f"a listener on {port}"))


def _haproxy_config(args: list[str]) -> Path:
    """The config HAProxy runs (``-f <home>/<hash>/haproxy.cfg``)."""
    return Path(args[args.index("-f") + 1])


def _haproxy_home(args: list[str]) -> str:
    """This server's own HAProxy directory."""
    return str(_haproxy_config(args).parents[1])


def _processes_using(fragment: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if fragment in " ".join(p.info["cmdline"] or [])]


def _serve_replica_env(pid: int, variable: str, default: str) -> set[str]:
    """``variable`` (``default`` where unset) in each Serve replica under ``pid``; a process that exits while it is
    read (an idle worker Ray retires, an HAProxy a reload replaced) is not one."""
    values = set()
    for process in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "ServeReplica" in " ".join(process.cmdline()):
                values.add(process.environ().get(variable, default))
    return values


@pytest.mark.slow
@pytest.mark.parametrize("throughput_optimized", [False, True],
                         ids=["haproxy,graceful-stop", "haproxy+throughput-optimized,forced-stop"])
def test_haproxy_ingress_answers_requests_and_stops_with_the_server(tmp_path, servers, throughput_optimized):
    """``RAG_SERVE_INGRESS=haproxy``: HAProxy (the binary ``ray[serve]`` bundles) owns ``API_PORT`` in front of
    Serve, a login, a search, a stream and a deadline go through it, its replicas drain for ``RAG_SERVE_DRAIN_S``,
    and SIGTERM lets a stream in flight finish, then stops it with Serve, Ray and Milvus Lite; so does a forced stop
    (a second signal), where HAProxy used to outlive the server holding the port. With
    ``RAG_SERVE_THROUGHPUT_OPTIMIZED``, Serve's replicas run in that mode and behave the same. Its stats and metrics
    ports are the server's own (Serve's fixed 8404 / 9101 would collide with a second server's)."""
    env = {k: v for k, v in server_env(tmp_path, RAG_PLATFORM="ray", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
                                       RAG_SERVE_INGRESS="haproxy", RAG_LLM_PROVIDERS=SLOW_STREAM_LLM,
                                       RAG_SERVE_THROUGHPUT_OPTIMIZED=str(throughput_optimized).lower()).items()
           if k != "RAY_ADDRESS" and not k.startswith("RAY_SERVE_")}
    env["RAG_SHUTDOWN_GRACE_S"] = "60"  # room for a slow machine; the forced variant ends on the second signal
    server = Server([str(BIN / "rag-server")], env, tmp_path)
    servers.append(server)
    server.wait_healthy(timeout_s=600)
    haproxy = _listener_cmdline(int(env["API_PORT"]))
    assert Path(haproxy[0]).name == "haproxy", haproxy
    home = _haproxy_home(haproxy)  # Serve reloads HAProxy (a new process) as replicas come and go: follow its config
    assert "/tmp/haproxy-serve/" not in " ".join(haproxy)  # this server's own config, not Serve's shared one
    # no second log line per request for Serve's own metrics: the router counts them
    assert "[serve@1 " not in _haproxy_config(haproxy).read_text()
    modes = _serve_replica_env(server.proc.pid, "RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")
    assert modes == {"1" if throughput_optimized else "0"}, modes
    # RAG_SERVE_DRAIN_S's default, not Serve's 30 s: that outlasted the 25 s default grace, so every stop was forced
    drains = _serve_replica_env(server.proc.pid, DRAIN_VARIABLE, "30")
    assert drains == {f"{Settings.model_fields['serve_drain_s'].default:g}"}, drains
    token = admin_token(server)
    spent = httpx.post(f"{server.url}/chat", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=60,
                       headers={"Authorization": f"Bearer {token}", "X-Request-Timeout": "0.001"})
    assert spent.status_code == 504, spent.text[:500]  # the deadline crosses the hop to the LLM deployment
    searched = httpx.post(f"{server.url}/query", headers={"Authorization": f"Bearer {token}"}, timeout=60,
                          json={"query": "what is in the index?", "mode": "search", "k": 3})
    assert searched.status_code == 200 and searched.json()["sources"] == [], searched.text[:500]
    request_id = searched.headers["x-request-id"]
    app_log = Path(env["RAG_DATA_DIR"]) / "logs" / "app.log"  # the router's access line, in either mode
    wait_until(lambda: app_log.is_file() and request_id in app_log.read_text(), 30, "the search's line in app.log")
    with httpx.stream("POST", f"{server.url}/chat/stream", headers={"Authorization": f"Bearer {token}"}, timeout=60,
                      json={"messages": [{"role": "user", "content": "say hi"}]}) as streamed:  # SSE through HAProxy
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        frames = [line for line in streamed.iter_lines() if line.startswith("event:")]
    assert frames and frames[-1] == "event: done", frames
    pids = {p.pid for p in _processes_using(home)}
    side_ports = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN
                  and c.pid in pids} - {int(env["API_PORT"])}
    assert len(side_ports) == 2 and not side_ports & {8404, 9101}, side_ports  # stats and metrics: its own ports

    if throughput_optimized:
        stream_across(server, token, lambda: _force_stop(server))  # cut short: not what this variant checks
        assert server.proc.wait(timeout=60) == 1, server.text()[-3000:]
        assert "second SIGTERM; stopping now" in server.text()
    else:
        events = stream_across(server, token, lambda: _stop_refusing_new_requests(server))
        assert events[-1] == "event: done", events
        assert server.proc.wait(timeout=90) == 0, server.text()[-3000:]
        assert "graceful_shutdown failed" not in server.text()
    wait_until(lambda: not _processes_using(home), 30, "every HAProxy of this server to exit")
    wait_closed(int(env["API_PORT"]), timeout_s=30)


def admin_token(server: Server) -> str:
    return str(httpx.post(f"{server.url}/auth/token", json={"username": "admin", "password": "lifecycle-admin-pw"},
                          timeout=30).json()["access_token"])


def stream_across(server: Server, token: str, stop: Callable[[], None],
                  question: dict[str, Any] = LONG_QUESTION) -> list[str]:
    """The events of a /chat/stream (~3.5 s) during which ``stop()`` runs: called once the first event has arrived
    (the server holds the request), the rest read after it until the stream ends or is cut."""
    events: list[str] = []
    with httpx.stream("POST", f"{server.url}/chat/stream", headers={"Authorization": f"Bearer {token}"},
                      json=question, timeout=120) as streamed:
        assert streamed.status_code == 200, streamed.read()[:500]
        lines = (line for line in streamed.iter_lines() if line.startswith("event:"))
        events.append(next(lines))
        stop()
        with contextlib.suppress(httpx.TransportError):  # a forced stop cuts it
            events.extend(lines)
    return events


def _stop_refusing_new_requests(server: Server) -> None:
    """SIGTERM, then a new request (``/health``) until it is refused: 503 ``shutting_down`` with Retry-After (a load
    balancer retries it elsewhere), while the stream in flight goes on. Serve used to answer 404 for a route gone."""
    server.signal(signal.SIGTERM)
    wait_until(lambda: _refused_as_stopping(server.url), 30, "a new request refused while the server stops")


def _refused_as_stopping(url: str) -> bool:
    answer = httpx.get(f"{url}/health", timeout=10)
    if answer.status_code == 200:  # the signal is still on its way
        return False
    assert answer.status_code == 503 and answer.json()["error"] == "shutting_down", (answer, answer.text[:300])
    assert int(answer.headers["retry-after"]) > 0, answer.headers
    # the router closes the connection; HAProxy keeps its client's open and picks a server per request
    assert answer.headers.get("connection", "close") == "close", answer.headers
    return True


def _force_stop(server: Server) -> None:
    """SIGTERM, then once it is being handled a second one: stop now."""
    server.signal(signal.SIGTERM)
    server.wait_line(r"shutting down")  # the first one handled (two at once would arrive as one)
    # a repeat within REPEAT_WINDOW_S counts as the first one, so it is sent again until the server exits
    wait_until(lambda: _signal_until_exit(server, signal.SIGTERM), 60, "the forced stop")


def _signal_until_exit(server: Server, sig: int) -> bool:
    """True once the server has exited; until then each call signals it again."""
    if server.proc.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        server.signal(sig)
    return server.proc.poll() is not None


def _stuck_request(url: str) -> socket.socket:
    """A request whose body never completes: only the cut at ``RAG_SHUTDOWN_IN_FLIGHT_S`` ends it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"username\": ")
    return sock


def test_sigterm_on_the_local_platform_drains_and_cuts_as_on_ray(tmp_path, servers):
    """``RAG_PLATFORM=local`` stops as Ray does: new requests get 503 ``shutting_down`` at once, a stream in flight
    finishes, and what still runs after ``RAG_SHUTDOWN_IN_FLIGHT_S`` — a ~50 s stream, and a request whose body never
    comes — is cut (the end of the stream; a 503), so the stop is an orderly one (exit 0), not one forced at the
    grace. Before, the local server gave every request the whole grace and new ones a refused connection."""
    grace_s, in_flight_s = 20.0, 6.0
    env = server_env(tmp_path, RAG_SHUTDOWN_GRACE_S=str(grace_s), RAG_SHUTDOWN_IN_FLIGHT_S=str(in_flight_s),
                     RAG_LLM_PROVIDERS=SLOW_STREAM_LLM)
    server = Server([str(BIN / "rag-server")], env, tmp_path)
    servers.append(server)
    server.wait_healthy()
    token = admin_token(server)
    with ThreadPoolExecutor(1) as pool, _stuck_request(server.url) as stuck:
        endless = pool.submit(stream_across, server, token, lambda: None, ENDLESS_QUESTION)
        wait_until(lambda: metric(server.url, "rag_http_requests_in_flight",
                                  headers={"Authorization": f"Bearer {token}"}) >= 3,
                   30, "the long stream and the stuck request in flight (and this scrape)")
        signalled = time.monotonic()
        events = stream_across(server, token, lambda: _stop_refusing_new_requests(server))
        cut = endless.result()
        refused = stuck.recv(4096).decode()
    assert events[-1] == "event: done", events
    assert "event: done" not in cut and len(cut) < 40, cut  # ended after its time, not answered in full
    assert refused.startswith("HTTP/1.1 503") and "RAG_SHUTDOWN_IN_FLIGHT_S" in refused, refused
    server.wait_line(rf"2 request\(s\) still running after {in_flight_s:g}s cut \(RAG_SHUTDOWN_IN_FLIGHT_S\)")
    assert server.proc.wait(timeout=grace_s + 10) == 0, server.text()[-3000:]
    assert time.monotonic() - signalled < grace_s, "the stop should end well within the grace"
    wait_closed(server.milvus_port, timeout_s=10)


@pytest.mark.slow
def test_a_shutdown_that_overruns_the_grace_period_is_forced(tmp_path, servers):
    """A part of the stop that hangs — here Milvus Lite, stopped (SIGSTOP) so that it cannot act on SIGTERM — turns
    it into the forced one at ``RAG_SHUTDOWN_GRACE_S``: exit 1, and what the server started killed."""
    grace_s = 3.0
    env = server_env(tmp_path, RAG_SHUTDOWN_GRACE_S=str(grace_s))
    server = Server([str(BIN / "rag-server")], env, tmp_path)
    servers.append(server)
    server.wait_healthy()
    milvus = _listener(server.milvus_port)
    milvus.suspend()
    try:
        server.signal(signal.SIGTERM)
        assert server.proc.wait(timeout=grace_s + 15) == 1, server.text()
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            milvus.resume()
    assert f"not stopped within RAG_SHUTDOWN_GRACE_S={grace_s:g}s" in server.text()
    wait_closed(server.milvus_port, timeout_s=10)


def _listener(port: int) -> psutil.Process:
    """The process accepting connections on ``port``."""
    return psutil.Process(wait_until(lambda: _listening_pid(port), 30, f"a listener on {port}"))

GRANDCHILD = """
import subprocess, sys, time
grandchild = subprocess.Popen(["sleep", "300"])
print(grandchild.pid, flush=True)
time.sleep(300)
"""
FORCED = """
import subprocess, sys
from rag_ray.cli.serve_cmd import kill_descendants
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
kill_descendants()
"""


def test_a_forced_stop_kills_grandchildren_too():
    """A forced stop kills every process the server started, however deep: ``PR_SET_PDEATHSIG`` reaches only direct
    children, and a grandchild they would orphan (as Serve's HAProxy actor orphans a reloaded HAProxy) keeps running
    — and its ports — unless it is killed too."""
    run = subprocess.run([sys.executable, "-c", FORCED, GRANDCHILD], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    grandchild = int(run.stdout.split()[0])

    def gone() -> bool:
        try:
            return psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        wait_until(gone, 10, "the grandchild to die")
    finally:
        with contextlib.suppress(psutil.Error):
            psutil.Process(grandchild).kill()


# --- rag-cli serve --reload ---

def test_reload_arguments_and_watched_packages():
    assert server_argv(["--env-file", "x", "serve", "--reload", "--reload-dir", "d", "--reload-dir=e", "--port", "9"]) \
        == ["--env-file", "x", "serve", "--port", "9"]
    assert (ROOT / "rag_ray") in default_watch_dirs()
    from typer.main import get_command

    from rag_ray.cli.main import app

    assert cli_argv(["--port", "9", "--env-file", "f", "--debug", "--reload"], get_command(app)) \
        == ["--env-file", "f", "--debug", "serve", "--port", "9", "--reload"]


@pytest.mark.slow
def test_reload_restarts_the_server_on_a_change_and_dies_with_nothing_left(tmp_path, servers):
    watched = tmp_path / "src"
    watched.mkdir()
    (watched / "mod.py").write_text("X = 1\n")
    env = server_env(tmp_path)
    server = Server([str(BIN / "rag-cli"), "serve", "--reload", "--reload-dir", str(watched)], env, tmp_path)
    servers.append(server)
    first = int(server.wait_line(r"server started \(pid (\d+)\)").group(1))
    server.wait_healthy()

    (watched / "mod.py").write_text("X = 2\n")
    second = int(server.wait_line(r"server started \(pid (\d+)\)").group(1))
    assert second != first
    assert not _alive(first), "the old server was not stopped before the new one started"
    server.wait_healthy()
    assert port_open("127.0.0.1", server.milvus_port)

    server.signal(signal.SIGKILL)  # the watcher dies hard: its server and Milvus Lite still go
    server.proc.wait(timeout=30)
    wait_closed(server.milvus_port, timeout_s=10)
    wait_closed(int(env["API_PORT"]), timeout_s=GRACE_S + 10)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
