"""The settings users read about are the settings the server reads: every setting is documented (README's
Configuration or ``.env.example``), every name documented there is a setting, and copying ``.env.example`` as it is
changes no default (an example that silently turned off the embedding pool's autoscaling did)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from rag_ray.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
# a server's connection template: read only when DB_HOST is set, so its values are an example, not the default
SERVER_TEMPLATE = {"DB_TYPE", "DB_PORT", "DB_NAME"}
SETTING_NAME = r"(?:RAG|MILVUS|LLM|EMBEDDING|DB|API|APP|DATABASE|SECRET)_[A-Z0-9_]*|SECRET_KEY|DATABASE_URL"


def aliases() -> dict[str, str]:
    """Environment name → field name."""
    return {str(field.validation_alias): name for name, field in Settings.model_fields.items()}


def example_lines() -> dict[str, str]:
    """``.env.example``'s settings (commented-out ones too) → the value it gives."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = (re.match(r"#? ?([A-Z][A-Z0-9_]+)=(\S*)", line) for line in lines)
    return {m.group(1): m.group(2) for m in pairs if m}


def readme_configuration() -> str:
    return (ROOT / "README.md").read_text().split("\n## Configuration", 1)[1].split("\n## ", 1)[0]


def test_every_setting_is_documented() -> None:
    documented = set(example_lines()) | set(re.findall(rf"`({SETTING_NAME})`", (ROOT / "README.md").read_text()))
    assert not set(aliases()) - documented


def test_every_documented_name_is_a_setting() -> None:
    named = set(re.findall(rf"`({SETTING_NAME})`", readme_configuration()))
    named |= {name for name in example_lines() if not name.startswith("RAY_")}  # RAY_ADDRESS: Ray's own
    assert named and not named - set(aliases())


def _as_default(raw: str, field: str) -> Any:
    """``raw`` as the setting's type (what the server makes of the example's value)."""
    return Settings.model_validate({"app_env": "test", Settings.model_fields[field].validation_alias: raw}
                                   ).model_dump()[field]


@pytest.mark.parametrize("name", sorted(set(example_lines()) - SERVER_TEMPLATE - {"RAY_ADDRESS"}))
def test_copying_the_example_changes_no_default(name: str) -> None:
    raw = example_lines()[name]
    field = aliases()[name]
    if raw:  # empty: unset
        assert _as_default(raw, field) == Settings(app_env="test").model_dump()[field]


def test_the_example_file_loads_as_an_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inline comments and all: what `--env-file .env` does with a copy of the example."""
    copy = tmp_path / ".env"
    copy.write_text((ROOT / ".env.example").read_text())
    for name in example_lines():
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(str(copy))
    assert settings.embed_concurrency_max == 0 and settings.hybrid_candidates == 40
    assert settings.governance_owner_only == ["restricted"] and settings.mask_pii is True
