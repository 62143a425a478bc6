"""The local-cluster harness itself (``tests/cluster.py``): a node that dies while starting is reported with its
output and started afresh, a bounded number of times."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cluster import START_ATTEMPTS, Node, NodeExited, start_with_retries


def _node(tmp_path: Path, script: str) -> Node:
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["sh", "-c", script], stdout=out, stderr=subprocess.STDOUT)
    return Node(proc, log)


def test_a_node_that_exits_is_reported_with_its_output(tmp_path: Path) -> None:
    node = _node(tmp_path, "echo 'Failed to start the grpc server. The specified port is 4242'; exit 3")
    node.proc.wait(timeout=30)

    exited = node.exited()

    assert isinstance(exited, NodeExited)
    assert "exited with 3" in str(exited) and "The specified port is 4242" in str(exited)


def test_a_running_node_has_not_exited(tmp_path: Path) -> None:
    node = _node(tmp_path, "exec sleep 60")
    try:
        assert node.exited() is None
    finally:
        node.proc.kill()
        node.proc.wait(timeout=30)


def test_a_start_that_exits_is_tried_again() -> None:
    attempts: list[int] = []

    def start(attempt: int) -> str:
        attempts.append(attempt)
        if attempt == 1:
            raise NodeExited("port taken")
        return "up"

    assert start_with_retries(start) == "up"
    assert attempts == [1, 2]


def test_a_node_that_never_starts_fails_after_the_last_attempt() -> None:
    attempts: list[int] = []

    def start(attempt: int) -> str:
        attempts.append(attempt)
        raise NodeExited(f"attempt {attempt}")

    with pytest.raises(NodeExited, match=f"attempt {START_ATTEMPTS}"):
        start_with_retries(start)
    assert attempts == list(range(1, START_ATTEMPTS + 1))
