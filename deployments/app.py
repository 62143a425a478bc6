"""The Serve application builder: router ingress + embedder + one LLM deployment per provider.

    serve run deployments.app:app            # settings from the environment
    rag-cli serve                            # the same builder, plus Milvus Lite and a local Ray
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve import Application

from deployments.embedder import EmbedderDeployment
from deployments.llm import LLMDeployment
from deployments.router import RouterDeployment
from rag_ray.config import Settings, load_settings


@dataclass(frozen=True)
class DeploymentOptions:
    """Serve knobs, sized for a 2-core machine by default; production raises them in serve_config.yaml."""

    router_cpus: float = 0.25
    embedder_cpus: float = 0.5
    llm_cpus: float = 0.5
    embedder_max_replicas: int = 2
    llm_max_replicas: int = 2
    max_ongoing_requests: int = 64
    max_queued_requests: int = 256
    embed_max_batch_size: int = 64
    embed_batch_wait_s: float = 0.01

    def autoscaling(self, max_replicas: int) -> dict[str, Any]:
        return {"min_replicas": 1, "max_replicas": max_replicas, "target_ongoing_requests": 8,
                "upscale_delay_s": 5, "downscale_delay_s": 60}


def llm_targets(settings: Settings) -> list[tuple[str, str]]:
    """(provider, model) pairs to host: the primary LLM plus any in RAG_LLM_PROVIDERS."""
    targets = [(settings.llm_provider.lower(), settings.llm_model)]
    for spec in _extra_specs(settings):
        provider, _, model = spec.partition(":")
        if (provider, model) not in targets:
            targets.append((provider, model))
    return targets


def _extra_specs(settings: Settings) -> list[str]:
    import json

    raw = getattr(settings, "llm_providers_json", None)
    if not raw:
        return []
    return [str(item["id"]) if isinstance(item, dict) else str(item) for item in json.loads(raw)]


def build_app(settings: Settings, options: DeploymentOptions | None = None) -> Application:
    opts = options or DeploymentOptions()
    embedder = serve.deployment(
        EmbedderDeployment, name="embedder", ray_actor_options={"num_cpus": opts.embedder_cpus},
        autoscaling_config=opts.autoscaling(opts.embedder_max_replicas),
        max_ongoing_requests=opts.max_ongoing_requests, max_queued_requests=opts.max_queued_requests,
    ).bind(settings, opts.embed_max_batch_size, opts.embed_batch_wait_s)
    llms = {
        f"{provider}:{model}": serve.deployment(
            LLMDeployment, name=f"llm-{provider}-{index}", ray_actor_options={"num_cpus": opts.llm_cpus},
            autoscaling_config=opts.autoscaling(opts.llm_max_replicas), max_ongoing_requests=16,
            max_queued_requests=opts.max_queued_requests, health_check_period_s=10,
        ).bind(settings, provider, model)
        for index, (provider, model) in enumerate(llm_targets(settings))
    }
    router_cls = serve.ingress()(RouterDeployment)
    return serve.deployment(
        router_cls, name="router", ray_actor_options={"num_cpus": opts.router_cpus},
        max_ongoing_requests=opts.max_ongoing_requests * 4, max_queued_requests=opts.max_queued_requests,
        graceful_shutdown_timeout_s=20,
    ).bind(settings, embedder, llms)


def app_builder(args: dict[str, str]) -> Application:
    """Entry for `serve run deployments.app:app_builder` / serve_config.yaml (`import_path`)."""
    return build_app(load_settings(args.get("env_file")))
