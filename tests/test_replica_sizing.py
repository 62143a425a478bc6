"""Model replicas size their threads from what Ray reserved for them, read inside Ray actors as a Serve replica reads
it: a replica reserving whole CPUs (serve_config.yaml's ``num_cpus: 1``) runs that many threads; one reserving a
share keeps its default. Before, each took every core (LLM) or half the node's (embedder) whatever number of replicas
Ray packed onto the node."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.embedder import EmbedderDeployment
from deployments.llm import LLMDeployment, sized_for_replica
from deployments.resources import reserved_cpus
from rag_ray.config import Settings
from rag_ray.providers.config import ProviderSpec

ROOT = Path(__file__).resolve().parents[1]
EMBEDDER_SETTINGS = Settings(embedding_provider="fake", embedding_model="fake-384")


@pytest.fixture
def actors(ray_local: None) -> Iterator[list[Any]]:
    import ray

    started: list[Any] = []
    yield started
    for actor in started:
        ray.kill(actor)


def _start(actors: list[Any], cls: type, num_cpus: float, *args: Any, **kwargs: Any) -> Any:
    import ray

    actor = ray.remote(num_cpus=num_cpus)(cls).remote(*args, **kwargs)
    actors.append(actor)
    return actor


def test_an_embedder_replica_runs_as_many_threads_as_whole_cpus_it_reserves(actors: list[Any]) -> None:
    import ray

    whole = _start(actors, EmbedderDeployment, 1, EMBEDDER_SETTINGS, replicas_per_node=1)
    share = _start(actors, EmbedderDeployment, 0.01, EMBEDDER_SETTINGS, replicas_per_node=1)
    assert ray.get(whole.info.remote(), timeout=120)["threads"] == 1
    assert ray.get(share.info.remote(), timeout=120)["threads"] == 0  # alone on its node: every core


class SizedLLM(LLMDeployment):
    def options(self) -> dict[str, Any]:
        return dict(self.spec.options)


def test_an_llm_replica_passes_its_whole_cpus_to_the_model_as_threads(actors: list[Any]) -> None:
    import ray

    whole = _start(actors, SizedLLM, 1, ProviderSpec(id="fake:echo"))
    share = _start(actors, SizedLLM, 0.01, ProviderSpec(id="fake:echo"))
    assert ray.get(whole.options.remote(), timeout=120) == {"threads": 1}
    assert ray.get(share.options.remote(), timeout=120) == {}


@pytest.mark.parametrize(("options", "reserved", "expected"),
                         [({}, 2.0, {"threads": 2}), ({}, 0.25, {}), ({"threads": 3}, 2.0, {"threads": 3}),
                          ({"max_batch": 4}, 1.0, {"max_batch": 4, "threads": 1})])
def test_an_explicit_threads_option_wins(options: dict[str, Any], reserved: float, expected: dict[str, Any]) -> None:
    assert sized_for_replica(ProviderSpec(id="local:m", options=options), reserved).options == expected


def test_a_process_that_is_no_ray_worker_reserves_nothing_and_starts_no_ray(ray_local: None) -> None:
    """A Ray driver (this test process) keeps the model's default; a process without Ray is asked without starting
    one (Ray's runtime context would: an EmbedderDeployment built in a test started a bare local Ray)."""
    assert reserved_cpus() == 0.0
    assert EmbedderDeployment(EMBEDDER_SETTINGS).threads == 0
    probe = "import ray; from deployments.resources import reserved_cpus; print(reserved_cpus(), ray.is_initialized())"
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["0.0", "False"], run.stdout + run.stderr
