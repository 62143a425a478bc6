"""The Serve application builder: router ingress + embedder + answer evaluator + one LLM deployment per provider.

    serve run deployments.serve_config.yaml  # or: serve run deployments.app:app_builder
    rag-cli serve                            # the same builder, plus Milvus Lite and a local Ray
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve import Application, Deployment

from deployments.embedder import BATCH_WAIT_S, MAX_BATCH_SIZE, EmbedderDeployment
from deployments.evaluator import EvaluatorDeployment
from deployments.llm import LLMDeployment
from deployments.router import RouterDeployment
from rag_ray.config import Settings, load_settings
from rag_ray.providers.config import ProviderSpec, configured_llm_specs

# what a router replica's requests in flight get when Serve stops that replica on its own (scaled down, replaced);
# at the server's stop, deployments/drain.py has answered or cut them first (RAG_SHUTDOWN_IN_FLIGHT_S)
ROUTER_STOP_S = 20.0


@dataclass(frozen=True)
class DeploymentOptions:
    """Serve knobs, sized for a 2-core machine by default; production raises them in serve_config.yaml."""

    # Logical CPUs (Ray scheduling tokens, not threads): small, so ingest jobs still fit beside Serve.
    router_cpus: float = 0.2
    embedder_cpus: float = 0.25
    llm_cpus: float = 0.25
    evaluator_cpus: float = 0.25
    embedder_min_replicas: int = 1
    # also how many embedder replicas may share a node's cores: each runs its model on cores ÷ this many threads
    embedder_max_replicas: int = 2
    llm_max_replicas: int = 2
    evaluator_max_replicas: int = 2
    # Autoscaling: Serve adds a replica while the average ongoing requests per replica stay above the target for
    # upscale_delay_s, and removes one after downscale_delay_s below it. The router gathers concurrent texts into
    # two calls in flight (Gatherer.steady_in_flight; more only with full batches), so the embedder's target is
    # small: two calls on one replica all the time is a busy model, and it gets a second replica.
    embedder_target_ongoing: float = 1.5
    llm_target_ongoing: float = 4
    evaluator_target_ongoing: float = 8
    upscale_delay_s: float = 5
    downscale_delay_s: float = 60
    look_back_period_s: float = 30  # the window the ongoing requests are averaged over (Serve's default)
    router_max_ongoing_requests: int = 256
    max_ongoing_requests: int = 64
    max_queued_requests: int = 256
    llm_max_ongoing_requests: int = 16
    retry_after_s: float = 1.0
    # how often a stopping replica checks whether its requests in flight are done: Serve's 2 s made an idle
    # replica's stop (and so every stop of the server) wait 2 s per check
    shutdown_poll_s: float = 0.5
    embed_max_batch_size: int = MAX_BATCH_SIZE
    embed_batch_wait_s: float = BATCH_WAIT_S
    # Model replicas share cores with the proxy and router: OpenMP threads that spin while waiting steal the
    # CPU those need (bench/serve.py, 2 cores: batched /embeddings at c32 48.6 → 61.5 req/s with PASSIVE).
    model_env: tuple[tuple[str, str], ...] = (("OMP_WAIT_POLICY", "PASSIVE"),)

    def model_actor(self, num_cpus: float) -> dict[str, Any]:
        """``ray_actor_options`` of a replica that runs a torch model in-process."""
        return {"num_cpus": num_cpus, "runtime_env": {"env_vars": dict(self.model_env)}}

    def lifecycle(self) -> dict[str, Any]:
        """What every deployment shares: full queues refuse at once, a stop notices promptly that it may finish."""
        return {"backpressure_config": self.backpressure(), "graceful_shutdown_wait_loop_s": self.shutdown_poll_s}

    def backpressure(self) -> dict[str, Any]:
        """Full queues answer 503 with Retry-After instead of piling up (and never 500)."""
        return {"status_code": 503, "retry_after_s": self.retry_after_s}

    def autoscaling(self, max_replicas: int, target_ongoing: float, min_replicas: int = 1) -> dict[str, Any]:
        return {"min_replicas": min_replicas, "max_replicas": max_replicas, "target_ongoing_requests": target_ongoing,
                "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s,
                "look_back_period_s": self.look_back_period_s}


def llm_deployment_name(spec: ProviderSpec) -> str:
    """``openai:gpt-4o-mini`` → ``llm-openai-gpt-4o-mini``: stable whatever the order of the provider list."""
    return "llm-" + re.sub(r"[^A-Za-z0-9]+", "-", spec.id).strip("-").lower()


def _deployment(cls: type) -> Deployment:
    return serve.deployment(cls)  # type: ignore[return-value]  # the decorator's overloads confuse mypy


def build_app(settings: Settings, options: DeploymentOptions | None = None,
              llm_overrides: dict[str, Any] | None = None) -> Application:
    """The Serve application. ``llm_overrides``: Serve options applied to every LLM deployment (their names follow the
    configured provider list, so serve_config.yaml sets them once under ``args.llm_deployment``)."""
    opts = options or DeploymentOptions()
    embedder = _deployment(EmbedderDeployment).options(
        name="embedder", ray_actor_options=opts.model_actor(opts.embedder_cpus),
        autoscaling_config=opts.autoscaling(opts.embedder_max_replicas, opts.embedder_target_ongoing,
                                            opts.embedder_min_replicas),
        max_ongoing_requests=opts.max_ongoing_requests, max_queued_requests=opts.max_queued_requests,
        **opts.lifecycle(),
    ).bind(settings, opts.embed_max_batch_size, opts.embed_batch_wait_s, opts.embedder_max_replicas)
    evaluator = _deployment(EvaluatorDeployment).options(
        name="evaluator", ray_actor_options=opts.model_actor(opts.evaluator_cpus),
        autoscaling_config=opts.autoscaling(opts.evaluator_max_replicas, opts.evaluator_target_ongoing),
        max_ongoing_requests=opts.max_ongoing_requests, max_queued_requests=opts.max_queued_requests,
        **opts.lifecycle(),
    ).bind(settings)
    specs, _ = configured_llm_specs(settings)
    llm_options = {"ray_actor_options": opts.model_actor(opts.llm_cpus),
                   "autoscaling_config": opts.autoscaling(opts.llm_max_replicas, opts.llm_target_ongoing),
                   "max_ongoing_requests": opts.llm_max_ongoing_requests,
                   "max_queued_requests": opts.max_queued_requests, "health_check_period_s": 10,
                   **opts.lifecycle(), **(llm_overrides or {})}
    llms = {spec.id: _deployment(LLMDeployment).options(name=llm_deployment_name(spec), **llm_options).bind(spec)
            for spec in specs}
    return _deployment(serve.ingress()(RouterDeployment)).options(
        name="router", ray_actor_options={"num_cpus": opts.router_cpus},
        max_ongoing_requests=opts.router_max_ongoing_requests, max_queued_requests=opts.max_queued_requests,
        graceful_shutdown_timeout_s=ROUTER_STOP_S, **opts.lifecycle(),
    ).bind(settings, embedder, llms, evaluator)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry for `serve run deployments.app:app_builder` and serve_config.yaml (``import_path``; ``args``: ``env_file``
    and ``llm_deployment``, the options of every LLM deployment)."""
    return build_app(load_settings(args.get("env_file")), llm_overrides=args.get("llm_deployment"))
