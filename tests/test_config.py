"""Typed settings: seed variable names, .env files, masking, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_ray.config import Settings, load_settings
from rag_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_loads_as_the_embedded_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(ROOT / ".env.example")
    assert (settings.embedding_provider, settings.llm_provider) == ("local", "local")
    assert settings.secret_key is None and settings.uses_milvus_lite
    assert settings.metadata_url.startswith("sqlite:///")
    key = settings.jwt_secret()
    assert len(key) >= 32 and key == settings.jwt_secret()  # generated once, then persisted


def test_seed_variable_names_and_db_parts(monkeypatch):
    for name, value in {"DB_TYPE": "postgresql", "DB_HOST": "db", "DB_PORT": "5432", "DB_NAME": "ragdb",
                        "DB_USER": "rag", "DB_PASSWORD": "p@ss/word", "MILVUS_HOST": "milvus",
                        "LLM_PROVIDER": "openai", "LLM_MODEL": "gpt-4o"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.metadata_url == "postgresql+psycopg://rag:p%40ss%2Fword@db:5432/ragdb"
    assert settings.milvus_address == "http://milvus:19530" and not settings.uses_milvus_lite
    assert (settings.llm_provider, settings.llm_model) == ("openai", "gpt-4o")


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://rag:hunter2@db/rag")
    masked = Settings(secret_key="s" * 40, llm_api_key="sk-live-123", milvus_password="mpw").masked()
    text = repr(masked)
    assert "hunter2" not in text and "sk-live-123" not in text and "mpw" not in text and "s" * 40 not in text
    assert masked["llm_api_key"] == "********" and "***" in masked["database_url"]


@pytest.mark.parametrize("key", ["changeme", "secret", "short-key"])
def test_production_refuses_placeholder_secrets(key):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings(app_env="production", secret_key=key)
    assert load_settings(app_env="production", secret_key="k" * 48).app_env == "production"


def test_the_haproxy_drain_must_fit_in_the_shutdown_grace():
    """A stop waits out the drain before the requests in flight: a drain as long as the grace forces every stop."""
    with pytest.raises(ValueError, match=r"RAG_SERVE_DRAIN_S \(25\) must be below RAG_SHUTDOWN_GRACE_S \(25\)"):
        Settings(serve_ingress="haproxy", serve_drain_s=25, shutdown_grace_s=25)
    assert Settings(serve_ingress="haproxy").serve_drain_s < Settings().shutdown_grace_s
    assert Settings(serve_ingress="proxy", serve_drain_s=25, shutdown_grace_s=25).serve_drain_s == 25  # unused there
