"""`rag-cli model …` commands, driven through typer's runner with the fake LLM and the fake OpenAI server."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from typer.testing import CliRunner

from rag_ray.cli import model
from rag_ray.cli.context import CliContext
from rag_ray.config import Settings
from rag_ray.testing import FakeOpenAIServer


def run(args: list[str], settings: Settings) -> tuple[int, str]:
    root = typer.Typer()
    root.add_typer(model.app, name="model")

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliContext(settings=settings, console=Console(width=200))

    result = CliRunner().invoke(root, ["model", *args])
    return result.exit_code, result.output


FAKE = Settings(llm_provider="fake", llm_model="echo", embedding_provider="fake", embedding_model="hash-bow")


def test_test_llm_prints_answer_and_usage() -> None:
    code, out = run(["test-llm", "--prompt", "hi there"], FAKE)
    assert code == 0 and "echo: hi there" in out and "fake:echo" in out


def test_test_llm_streams_through_the_openai_fake() -> None:
    with FakeOpenAIServer() as server:
        settings = Settings(RAG_LLM_PROVIDERS=json.dumps(  # type: ignore[call-arg]
            [{"id": "openai:gpt-4o-mini", "api_key": "k", "base_url": server.base_url}]))
        code, out = run(["test-llm", "--stream", "--provider", "openai"], settings)
    assert code == 0 and server.text in out.replace("\n", "") and "finish=stop" in out


def test_test_llm_unknown_provider_exits_1() -> None:
    code, out = run(["test-llm", "--provider", "nope"], FAKE)
    assert code == 1 and "invalid_input" in out


def test_test_embedding_and_benchmark_and_list() -> None:
    code, out = run(["test-embedding"], FAKE)
    assert code == 0 and "dimension=64" in out
    code, out = run(["benchmark", "--iterations", "5", "--concurrency", "2"], FAKE)
    assert code == 0 and "p50_ms" in out and "rps" in out
    code, out = run(["list-models", "--health"], FAKE)
    assert code == 0 and "fake:echo" in out and "closed" in out


def test_set_model_updates_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nLLM_PROVIDER=local\nAPI_PORT=9000\n")
    code, out = run(["set-model", "openai:gpt-4o", "--env-file", str(env)], FAKE)
    assert code == 0
    assert env.read_text() == "# comment\nLLM_PROVIDER=openai\nAPI_PORT=9000\nLLM_MODEL=gpt-4o\n"
    code, out = run(["set-model", "nosuch:model", "--env-file", str(env)], FAKE)
    assert code == 1 and "config_error" in out
