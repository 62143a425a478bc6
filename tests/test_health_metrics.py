"""``/health``, ``/admin/providers``, ``/metrics`` with the scrape token, and the Grafana dashboard, through the
in-process HTTP app (real SQLite, Milvus Lite, fake models)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from rag_ray.config import Settings
from rag_ray.errors import ProviderServerError
from rag_ray.llm.fake import FakeLLM
from rag_ray.providers.breaker import BreakerConfig
from rag_ray.store.milvus import ChunkStore
from tests.api_helpers import build_rig, inbox
from tests.rdb_helpers import wait_job

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "rag-ray.json"
SCRAPE_TOKEN = "prometheus-scrape-" + "t" * 30
HI = {"messages": [{"role": "user", "content": "hello there"}]}


def no_internals(body: dict[str, Any]) -> None:
    """What /health shows without auth: statuses, latencies, counts, the embedding model — no errors or addresses."""
    text = json.dumps(body)
    assert "error\":" not in text.replace('"status": "error"', "")
    for leak in ("sqlite", "127.0.0.1", "http://", "Traceback", "Error:"):
        assert leak not in text, leak


# ---- /health -------------------------------------------------------------------------------------------------
def test_health_reports_each_component(make_settings: Any, fake_store: ChunkStore) -> None:
    rig = build_rig(make_settings(), fake_store)
    response = rig.client.get("/health")  # no auth
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    components = body["components"]
    assert set(components) == {"database", "milvus", "providers", "embedder"}
    assert all(c["status"] == "ok" for c in components.values())
    assert components["providers"] == {"status": "ok", "latency_ms": components["providers"]["latency_ms"],
                                       "providers": 1, "unavailable": 0}
    assert components["embedder"]["model"] == "fake:hash-bow"
    no_internals(body)


def test_health_is_503_when_the_metadata_db_is_gone(make_settings: Any, fake_store: ChunkStore) -> None:
    settings = make_settings()
    rig = build_rig(settings, fake_store)
    rig.db.engine.dispose()
    shutil.move(settings.resolved_data_dir, settings.resolved_data_dir.with_name("moved"))  # the SQLite file's dir
    response = rig.client.get("/health", headers={"X-Request-ID": "req-db-gone"})
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["components"]["database"]["status"] == "error"
    assert body["components"]["milvus"]["status"] == "ok"
    no_internals(body)


def test_health_is_503_when_the_collection_is_gone(make_settings: Any, fake_store: ChunkStore) -> None:
    rig = build_rig(make_settings(), fake_store)
    fake_store.drop()
    body = rig.client.get("/health").json()
    assert body["status"] == "error" and body["components"]["milvus"]["status"] == "error"
    assert body["components"]["database"]["status"] == "ok"
    no_internals(body)


# ---- breakers: /health degraded, /admin/providers, /metrics ---------------------------------------------------
def broken_provider_rig(make_settings: Any, store: ChunkStore) -> Any:
    """The configured fake provider fails every call; after 5 failures its breaker opens."""
    return build_rig(make_settings(llm_max_retries=0), store, llm=FakeLLM(fail_with=ProviderServerError("down")))


def test_open_breakers_degrade_health_and_show_on_admin_providers(make_settings: Any, fake_store: ChunkStore) -> None:
    rig = broken_provider_rig(make_settings, fake_store)
    before = rig.client.get("/admin/providers", headers=rig.auth()).json()
    assert before["status"] == "ok" and before["llm"]["entries"][0]["breaker"]["state"] == "closed"
    for _ in range(BreakerConfig().failure_threshold):
        assert rig.client.post("/chat", headers=rig.auth(), json=HI).status_code >= 500

    health = rig.client.get("/health")
    assert health.status_code == 200  # providers are not essential: the server still searches
    assert health.json()["status"] == "degraded"
    assert health.json()["components"]["providers"] | {"latency_ms": 0} == {
        "status": "error", "latency_ms": 0, "providers": 1, "unavailable": 1}
    no_internals(health.json())

    providers = rig.client.get("/admin/providers", headers=rig.auth()).json()
    assert providers["status"] == "error" and providers["checked"] is False
    [entry] = providers["llm"]["entries"]
    assert entry["id"] == "fake:echo" and entry["breaker"]["state"] == "open" and entry["failures"] == 5
    assert providers["embeddings"]["entries"][0]["breaker"]["state"] == "closed"
    checked = rig.client.get("/admin/providers", params={"check": "true"}, headers=rig.auth()).json()
    assert checked["checked"] is True and checked["llm"]["entries"][0]["healthy"] is False

    metrics = rig.client.get("/metrics", headers=rig.auth()).text
    assert 'rag_llm_breaker_state{provider="fake:echo"} 2' in metrics
    assert 'rag_llm_healthy{provider="fake:echo"} 0' in metrics
    assert 'rag_llm_failures{provider="fake:echo"} 5' in metrics
    assert re.search(r'rag_embedding_breaker_state\{provider="fake:hash-bow"\} 0', metrics)
    assert "# HELP rag_llm_breaker_state LLM provider circuit breaker" in metrics


def test_admin_providers_needs_an_admin(make_settings: Any, fake_store: ChunkStore) -> None:
    rig = build_rig(make_settings(), fake_store)
    assert rig.client.get("/admin/providers").status_code == 401
    assert rig.client.get("/admin/providers", headers=rig.auth("alice")).status_code == 403
    healthy = rig.client.get("/admin/providers", params={"check": "true"}, headers=rig.auth()).json()
    assert healthy["status"] == "ok" and healthy["llm"]["entries"][0]["healthy"] is True


# ---- /metrics: the scrape token -------------------------------------------------------------------------------
def test_prometheus_scrapes_with_the_token_not_a_user_jwt(make_settings: Any, fake_store: ChunkStore) -> None:
    rig = build_rig(make_settings(metrics_token=SCRAPE_TOKEN), fake_store)

    def scrape(token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return rig.client.get("/metrics", headers=headers).status_code

    assert scrape(SCRAPE_TOKEN) == 200
    assert scrape(None) == 401
    assert scrape(SCRAPE_TOKEN[:-1]) == 401 and scrape(SCRAPE_TOKEN + "x") == 401
    assert scrape("admin-token") == 200  # an admin still may
    assert scrape("alice-token") == 403
    only_metrics = rig.client.get("/jobs", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert only_metrics.status_code == 401

    without = build_rig(make_settings(), fake_store)  # no token configured: nothing is accepted as one
    assert without.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).status_code == 401


def test_a_short_scrape_token_is_refused_in_production() -> None:
    settings = Settings(app_env="production", secret_key="s" * 40, metrics_token="short")  # type: ignore[call-arg]
    assert any("RAG_METRICS_TOKEN" in p for p in settings.validate_for_production())


# ---- the Grafana dashboard ------------------------------------------------------------------------------------
def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    return {name for expr in exprs for name in re.findall(r"\b(rag_[a-z0-9_]+)\b", expr)}


def exported_metrics(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_the_dashboard_queries_is_exported(make_settings: Any, fake_store: ChunkStore) -> None:
    rig = build_rig(make_settings(metrics_token=SCRAPE_TOKEN, llm_max_retries=0), fake_store)
    rig.client.get("/health")
    single = rig.client.post("/generate/single", headers=rig.auth(), json={"query": "What is basalt?"})
    assert single.status_code == 200, single.text
    ensemble = rig.client.post("/generate/ensemble", headers=rig.auth(),
                               json={"query": "What is basalt?", "ensemble_size": 2})
    assert ensemble.status_code == 200, ensemble.text
    (inbox(rig.settings) / "basalt.txt").write_text("Basalt is a volcanic rock.")
    job = rig.client.post("/extract/filesystem", headers=rig.auth(), json={"directory": str(inbox(rig.settings))})
    assert job.status_code == 202 and wait_job(rig.db, job.json()["job_id"]).status == "succeeded"
    text = rig.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).text

    queried = dashboard_metrics()
    assert {"rag_http_requests_total", "rag_http_request_seconds_bucket", "rag_llm_breaker_state",
            "rag_generation_quality_sum"} <= queried  # the dashboard covers rates, latency, breakers, quality
    missing = queried - exported_metrics(text)
    assert not missing, f"the dashboard queries metrics the app does not export: {sorted(missing)}"


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel.get("targets", []):
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_the_operations_settings_are_documented() -> None:
    names = ("RAG_LOG_LEVEL", "RAG_LOG_JSON", "RAG_LOG_FILE", "RAG_LOG_MAX_BYTES", "RAG_LOG_BACKUP_COUNT",
             "RAG_METRICS_TOKEN", "RAG_DB_POOL_SIZE", "RAG_DB_MAX_OVERFLOW", "RAG_DB_POOL_TIMEOUT_S",
             "RAG_DB_POOL_RECYCLE_S", "RAG_SQLITE_SYNCHRONOUS", "RAG_MILVUS_TIMEOUT_S")
    aliases = {str(f.validation_alias) for f in Settings.model_fields.values()}
    example, readme = (ROOT / ".env.example").read_text(), (ROOT / "README.md").read_text()
    for name in names:
        assert name in aliases and f"\n{name}=" in example and f"`{name}`" in readme, name
