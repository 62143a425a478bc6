"""The shipped Serve config and cluster launcher config are valid and match what the builder deploys."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.app import DeploymentOptions, app_builder, build_app
from rag_ray.config import Settings
from rag_ray.providers.config import configured_llm_specs

ROOT = Path(__file__).resolve().parents[1]


def _deployments(app) -> list:  # type: ignore[no-untyped-def]
    found, stack = [], [app._bound_deployment]
    while stack:
        deployment = stack.pop()
        found.append(deployment)
        for arg in [*deployment.init_args, *deployment.init_kwargs.values()]:
            children = arg.values() if isinstance(arg, dict) else [arg]
            stack.extend(c._bound_deployment for c in children if hasattr(c, "_bound_deployment"))
    return found


def _deployment_names(app) -> set[str]:  # type: ignore[no-untyped-def]
    return {deployment.name for deployment in _deployments(app)}


def test_every_deployment_notices_promptly_that_a_stop_may_finish():
    """A stopping replica checks its requests in flight every 0.5 s, not Serve's 2 s (which every stop waited out)."""
    polls = {d.name: d._deployment_config.graceful_shutdown_wait_loop_s for d in _deployments(build_app(Settings()))}
    assert set(polls.values()) == {DeploymentOptions().shutdown_poll_s} and len(polls) == 4, polls


def test_serve_config_parses_and_names_real_deployments():
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "deployments" / "serve_config.yaml").read_text()))
    app_config = config.applications[0]
    assert app_config.import_path == "deployments.app:app_builder"
    configured = {d.name for d in app_config.deployments}
    built = _deployment_names(build_app(Settings()))
    assert configured == {"router", "embedder", "evaluator"}
    assert built == configured | {"llm-local-smollm2-135m-instruct"}
    assert all(d.max_queued_requests for d in app_config.deployments)


def _bound_llms(app) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {d._bound_deployment.name: d._bound_deployment for d in app._bound_deployment.init_args[2].values()}


def test_serve_config_fits_any_provider_list(monkeypatch):
    """The same shipped YAML deploys a multi-provider list: one deployment per provider, all with its LLM options."""
    providers = '[{"id": "openai:gpt-4o-mini", "api_key": "k"}, {"id": "ollama:llama3"}, {"id": "anthropic:claude"}]'
    monkeypatch.setenv("RAG_LLM_PROVIDERS", providers)
    config = yaml.safe_load((ROOT / "deployments" / "serve_config.yaml").read_text())
    args = config["applications"][0]["args"]
    app = app_builder(args)
    specs, _ = configured_llm_specs(Settings())
    assert [s.id for s in specs] == ["openai:gpt-4o-mini", "ollama:llama3", "anthropic:claude"]
    llms = _bound_llms(app)
    assert set(llms) == {"llm-openai-gpt-4o-mini", "llm-ollama-llama3", "llm-anthropic-claude"}
    for deployment in llms.values():
        assert deployment.max_ongoing_requests == args["llm_deployment"]["max_ongoing_requests"]
        assert deployment.ray_actor_options["num_cpus"] == args["llm_deployment"]["ray_actor_options"]["num_cpus"]


def test_an_empty_provider_list_is_refused():
    import pytest

    from rag_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="RAG_LLM_PROVIDERS"):
        build_app(Settings(llm_providers_json="[]"))


def test_cluster_yaml_is_a_launcher_config():
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert {"cluster_name", "provider", "head_start_ray_commands", "worker_start_ray_commands"} <= set(cluster)
    assert any("uv sync --frozen" in c for c in cluster["setup_commands"])


def test_embedder_user_config_sets_the_batching_knobs():
    """serve_config.yaml's embedder ``user_config`` is what ``reconfigure`` applies to ``@serve.batch``."""
    from deployments.embedder import EmbedderDeployment

    config = yaml.safe_load((ROOT / "deployments" / "serve_config.yaml").read_text())
    embedder = next(d for d in config["applications"][0]["deployments"] if d["name"] == "embedder")
    deployment = EmbedderDeployment(Settings(embedding_provider="fake", embedding_model="fake-384"),
                                    max_batch_size=4, batch_wait_timeout_s=0.5)
    batched = deployment._embed_batched
    assert (batched._get_max_batch_size(), batched._get_batch_wait_timeout_s()) == (4, 0.5)
    deployment.reconfigure(embedder["user_config"])
    assert batched._get_max_batch_size() == embedder["user_config"]["max_batch_size"]
    assert batched._get_batch_wait_timeout_s() == embedder["user_config"]["batch_wait_timeout_s"]
