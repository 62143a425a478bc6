"""Platforms: found by name (built in, or through the ``rag_ray.platforms`` entry point), and `rag-cli serve` on the
one-process ``local`` platform — the same composition root as Serve, no Ray."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from rag_ray.errors import ConfigError
from rag_ray.server.platform import LocalPlatform, load_platform
from rag_ray.store import lite_server
from rag_ray.store.lite_server import PICK_FROM, ephemeral_start, free_port, port_open


def test_platforms_are_found_by_name_without_the_library_importing_them():
    from deployments.platform import RayPlatform

    assert isinstance(load_platform("local"), LocalPlatform)
    assert isinstance(load_platform("ray"), RayPlatform)
    with pytest.raises(ConfigError, match=r"unknown platform 'nope'.*local.*ray"):
        load_platform("nope")


def test_free_ports_are_below_what_port_0_binds_get_and_skip_busy_ones(monkeypatch, tmp_path):
    """Serve's proxy once failed to bind a port picked with a port-0 bind: Ray's processes had taken it meanwhile."""
    below = ephemeral_start()
    assert all(PICK_FROM <= free_port() < below for _ in range(20))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        taken, spare = busy.getsockname()[1], free_port()
        picks = iter([taken, spare])
        monkeypatch.setattr(lite_server.random, "randrange", lambda _low, _high: next(picks))
        assert free_port() == spare
    monkeypatch.setattr(lite_server, "EPHEMERAL_RANGE", tmp_path / "no-such-file")
    assert ephemeral_start() == 49152


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # polling a server that is still starting
    raise AssertionError("server did not become healthy")


def test_serve_on_the_local_platform_answers_and_stops_on_ctrl_c(tmp_path):
    api_port, milvus_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "EMBEDDING_", "MILVUS_", "RAG_"))},
           "RAG_PLATFORM": "local", "RAG_DATA_DIR": str(tmp_path / "data"), "API_PORT": str(api_port),
           "RAG_MILVUS_LITE_PORT": str(milvus_port), "RAG_ADMIN_PASSWORD": "local-admin-pw",
           "EMBEDDING_PROVIDER": "fake", "EMBEDDING_MODEL": "hash-bow", "LLM_PROVIDER": "fake", "LLM_MODEL": "echo"}
    proc = subprocess.Popen([sys.executable, "-m", "rag_ray.cli.main", "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{api_port}"
    try:
        _wait_healthy(url, proc)
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "local-admin-pw"},
                           timeout=30).json()["access_token"]
        r = httpx.post(f"{url}/chat", headers={"Authorization": f"Bearer {token}"},
                       json={"messages": [{"role": "user", "content": "hello"}]}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["provider"] == "fake"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
    assert not port_open("127.0.0.1", milvus_port), "Milvus Lite outlived the server"


def _clear_haproxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable ``ingress`` sets for HAProxy, unset for the test and restored after it. Set first: ``delenv``
    of an unset variable records nothing, and what ``ingress`` then set leaked into the session's later Ray (whose
    Serve ran HAProxy)."""
    from deployments.platform import DRAIN_VARIABLE, HAPROXY_REQUEST_METRICS_VARIABLE, HAPROXY_SIDE_PORTS

    for variable in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                     "RAY_SERVE_HAPROXY_SERVER_STATE_BASE", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE", DRAIN_VARIABLE,
                     HAPROXY_REQUEST_METRICS_VARIABLE, *HAPROXY_SIDE_PORTS):
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)


def test_the_haproxy_ingress_hands_serve_the_drain_setting(monkeypatch, tmp_path):
    """Serve's replicas read their drain from the environment of the Ray this server starts."""
    from deployments.platform import DRAIN_VARIABLE, ingress
    from rag_ray.config import Settings

    _clear_haproxy_env(monkeypatch)
    with ingress(Settings(data_dir=tmp_path, serve_ingress="haproxy", serve_drain_s=1.5)):  # type: ignore[call-arg]
        assert os.environ[DRAIN_VARIABLE] == "1.5" and os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"


@pytest.mark.parametrize("operator_value", [None, "1"])
def test_the_haproxy_ingress_leaves_serves_per_request_metrics_to_the_operator(monkeypatch, tmp_path, operator_value):
    """HAProxy logs no second line per request for Serve's own request metrics (the router's /metrics counts them),
    unless the operator's environment asks for them."""
    from deployments.platform import HAPROXY_REQUEST_METRICS_VARIABLE, ingress
    from rag_ray.config import Settings

    _clear_haproxy_env(monkeypatch)
    if operator_value is not None:
        monkeypatch.setenv(HAPROXY_REQUEST_METRICS_VARIABLE, operator_value)
    with ingress(Settings(data_dir=tmp_path, serve_ingress="haproxy")):  # type: ignore[call-arg]
        assert os.environ[HAPROXY_REQUEST_METRICS_VARIABLE] == (operator_value or "0")
