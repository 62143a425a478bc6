"""Overload over real HTTP: full queues answer 503 with Retry-After (never 500, never a hang), then recover."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from rag_ray.config import Settings
from tests.conftest import small_deployment_options


@pytest.fixture(scope="module")
def slow_app(serve_app):
    """A second app in the same Serve instance: one slow fake LLM, a router that takes one request at a time."""
    from ray import serve

    from deployments.app import build_app

    base = serve_app.settings
    settings = Settings(data_dir=base.data_dir, milvus_uri=base.milvus_uri,  # type: ignore[call-arg]
                        collection=f"ovl_{uuid.uuid4().hex[:8]}", embedding_provider="fake",
                        embedding_model="hash-bow", app_env="test", secret_key=base.secret_key,
                        llm_providers_json=json.dumps([{"id": "fake:slow", "options": {"delay_s": 1.5}}]))
    options = small_deployment_options(router_max_ongoing_requests=1, max_queued_requests=1, retry_after_s=2)
    serve.run(build_app(settings, options), name="overload", route_prefix="/overload", blocking=False)
    yield f"{serve_app.url}/overload", serve_app.headers()
    serve.delete("overload")


async def _burst(url: str, headers: dict[str, str], n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        body = {"query": "anything", "mode": "rag", "k": 1}
        return await asyncio.gather(*(client.post(f"{url}/query", headers=headers, json=body) for _ in range(n)))


def test_full_queue_sheds_load_with_retry_after_and_recovers(slow_app):
    url, headers = slow_app
    responses = asyncio.run(_burst(url, headers, 8))
    codes = sorted(r.status_code for r in responses)
    assert 500 not in codes and set(codes) <= {200, 429, 503}, codes
    shed = [r for r in responses if r.status_code in (429, 503)]
    assert shed and all(r.headers.get("retry-after") for r in shed), codes
    assert any(r.status_code == 200 for r in responses)
    after = httpx.post(f"{url}/query", headers=headers, json={"query": "again", "mode": "rag", "k": 1}, timeout=60)
    assert after.status_code == 200 and after.json()["model"] == "slow"
