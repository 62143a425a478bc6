"""`rag-cli model test-llm|test-embedding|benchmark|list-models|set-model`."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rag_ray.cli.context import console_from, settings_from
from rag_ray.errors import RagError
from rag_ray.llm.base import GenerationParams, as_messages
from rag_ray.registry import split_model_id

app = typer.Typer(help="Test and manage models")


@contextmanager
def _errors_exit(ctx: typer.Context) -> Iterator[None]:
    """A rag-ray error becomes one red line and exit code 1, not a traceback."""
    try:
        yield
    except RagError as err:
        field = f" [{err.field}]" if err.field else ""
        console_from(ctx).print(f"[red]✗ {err.code}{field}:[/red] {err.message}")
        raise typer.Exit(1) from None


def _llm_manager(ctx: typer.Context) -> Any:
    from rag_ray.providers import build_llm_manager

    return build_llm_manager(settings_from(ctx))


@app.command("test-llm")
def test_llm(ctx: typer.Context,
             provider: str | None = typer.Option(None, "--provider", help="provider or provider:model id"),
             prompt: str = typer.Option("Say hello in five words.", "--prompt"),
             stream: bool = typer.Option(False, "--stream", help="stream the answer token by token"),
             max_tokens: int = typer.Option(64, "--max-tokens")) -> None:
    """Send one prompt through the configured LLM provider(s) and show answer, usage, latency and cost."""
    console = console_from(ctx)
    with _errors_exit(ctx):
        manager = _llm_manager(ctx)
        params = GenerationParams(max_tokens=max_tokens, temperature=0.2)
        if stream:
            asyncio.run(_stream_to(console.print, manager, prompt, params, provider))
            return
        completion = asyncio.run(manager.generate(as_messages(prompt), params, provider=provider))
    console.print(completion.text)
    console.print(f"[dim]{completion.provider}:{completion.model} · {completion.latency_ms:.0f} ms · "
                  f"{completion.usage.to_dict()} · ${completion.cost_usd:.6f} · {completion.finish_reason}[/dim]")


async def _stream_to(emit: Callable[..., None], manager: Any, prompt: str, params: GenerationParams,
                     provider: str | None) -> None:
    async for chunk in manager.stream(as_messages(prompt), params, provider=provider):
        if chunk.delta:
            emit(chunk.delta, end="")
        if chunk.finish_reason:
            emit(f"\n[dim]finish={chunk.finish_reason} usage={chunk.usage.to_dict() if chunk.usage else None}[/dim]")


@app.command("test-embedding")
def test_embedding(ctx: typer.Context,
                   provider: str | None = typer.Option(None, "--provider", help="provider or provider:model id"),
                   text: str = typer.Option("Ray Serve scales model serving.", "--text")) -> None:
    """Embed one text through the configured embedder(s) and show dimension, norm and latency."""
    from rag_ray.providers import build_embedding_manager

    with _errors_exit(ctx):
        manager = build_embedding_manager(settings_from(ctx))
        start = time.perf_counter()
        vectors = asyncio.run(manager.aembed([text], input_type="query", provider=provider))
    elapsed = (time.perf_counter() - start) * 1000
    norm = float((vectors[0] ** 2).sum() ** 0.5)
    console_from(ctx).print(f"dimension={vectors.shape[1]} norm={norm:.4f} latency={elapsed:.0f} ms "
                            f"first={[round(float(x), 4) for x in vectors[0][:4]]}")


@app.command()
def benchmark(ctx: typer.Context, iterations: int = typer.Option(10, "--iterations", min=1),
              concurrency: int = typer.Option(1, "--concurrency", min=1),
              provider: str | None = typer.Option(None, "--provider"),
              prompt: str = typer.Option("Summarise Ray in one sentence.", "--prompt"),
              max_tokens: int = typer.Option(32, "--max-tokens")) -> None:
    """Run the prompt N times (optionally concurrently) and report latency percentiles and throughput."""
    with _errors_exit(ctx):
        manager = _llm_manager(ctx)
        result = asyncio.run(_bench(manager, iterations, concurrency, provider, prompt, max_tokens))
    table = Table("metric", "value", title="LLM benchmark")
    for key, value in result.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    console_from(ctx).print(table)


async def _bench(manager: Any, iterations: int, concurrency: int, provider: str | None, prompt: str,
                 max_tokens: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = 0
    params = GenerationParams(max_tokens=max_tokens, temperature=0.2)

    async def one() -> None:
        nonlocal errors
        async with gate:
            start = time.perf_counter()
            try:
                await manager.generate(as_messages(prompt), params, provider=provider)
                latencies.append((time.perf_counter() - start) * 1000)
            except RagError:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(iterations)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies) or [0.0]
    return {"iterations": iterations, "errors": errors, "p50_ms": statistics.median(ordered),
            "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max_ms": ordered[-1],
            "rps": len(latencies) / wall if wall else 0.0,
            "cost_usd": float(manager.status()["total_cost_usd"])}


@app.command("list-models")
def list_models(ctx: typer.Context,
                health: bool = typer.Option(False, "--health", help="ping every provider first")) -> None:
    """The configured LLM providers with priority, weight, price, context window and breaker state."""
    with _errors_exit(ctx):
        manager = _llm_manager(ctx)
        if health:
            asyncio.run(manager.check_health())
    table = Table("id", "priority", "weight", "breaker", "healthy", "in-flight", "ewma ms", "$/1M in/out",
                  "max context", title=f"LLM providers (strategy: {manager.pool.default_strategy})")
    for entry in manager.entries:
        price = f"{entry.price.input_per_m:g}/{entry.price.output_per_m:g}" if entry.price.known else "unknown"
        table.add_row(entry.id, str(entry.priority), f"{entry.weight:g}", entry.breaker.state.value,
                      "yes" if entry.healthy else "no", str(entry.in_flight),
                      "-" if entry.ewma_ms is None else f"{entry.ewma_ms:.0f}", price, str(entry.max_context or "-"))
    console_from(ctx).print(table)


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def write_env(path: Path, values: dict[str, str]) -> None:
    """Set KEY=value lines in an env file, replacing existing keys and keeping everything else."""
    lines = path.read_text().splitlines() if path.exists() else []
    pending = dict(values)
    out = []
    for line in lines:
        match = _ENV_LINE.match(line)
        key = match.group(1) if match else None
        out.append(f"{key}={pending.pop(key)}" if key in pending else line)
    out.extend(f"{key}={value}" for key, value in pending.items())
    path.write_text("\n".join(out) + "\n")


@app.command("set-model")
def set_model(ctx: typer.Context,
              model_id: str | None = typer.Argument(None, help="provider:model, e.g. openai:gpt-4o",
                                                    show_default=False),
              llm_provider: str | None = typer.Option(None, "--llm-provider", help="LLM provider, e.g. openai"),
              llm_model: str | None = typer.Option(None, "--llm-model", help="LLM model, e.g. gpt-4"),
              embedding_provider: str | None = typer.Option(None, "--embedding-provider",
                                                            help="embedding provider, e.g. openai"),
              embedding_model: str | None = typer.Option(None, "--embedding-model",
                                                         help="embedding model, e.g. text-embedding-3-small"),
              env_file: Path | None = typer.Option(None, "--env-file", help="env file to update (default: the "
                                                                            "global --env-file, else .env)")) -> None:
    """Write LLM_PROVIDER / LLM_MODEL (and EMBEDDING_PROVIDER / EMBEDDING_MODEL) into the env file; other lines are
    kept. The LLM as `provider:model` or with --llm-provider/--llm-model; the server reads it on its next start."""
    from rag_ray.embedding import EMBEDDERS
    from rag_ray.embedding import load_providers as load_embedders
    from rag_ray.llm import LLMS, load_providers

    target = env_file or _global_env_file(ctx) or Path(".env")
    with _errors_exit(ctx):
        values: dict[str, str] = {}
        if model_id or llm_provider or llm_model:
            load_providers()
            values |= _pair(LLMS, "LLM", *_llm_choice(model_id, llm_provider, llm_model))
        if embedding_provider or embedding_model:
            load_embedders()
            values |= _pair(EMBEDDERS, "EMBEDDING", embedding_provider, embedding_model)
        if not values:
            raise RagError("say what to set: provider:model, or --llm-provider/--llm-model, or "
                           "--embedding-provider/--embedding-model", field="model")
        write_env(target, values)
    console_from(ctx).print(f"[green]✓[/green] {target}: " + " ".join(f"{k}={v}" for k, v in values.items()))


def _global_env_file(ctx: typer.Context) -> Path | None:
    params = ctx.find_root().params
    value = params.get("env_file") if isinstance(params, dict) else None
    return Path(value) if value else None


def _llm_choice(model_id: str | None, provider: str | None, model: str | None) -> tuple[str | None, str | None]:
    if model_id:
        if provider or model:
            raise RagError("give provider:model or --llm-provider/--llm-model, not both", field="model")
        return split_model_id(model_id)
    return provider, model


def _pair(registry: Any, prefix: str, provider: str | None, model: str | None) -> dict[str, str]:
    """``{PREFIX_PROVIDER, PREFIX_MODEL}`` after checking the provider is known and the model name is usable."""
    if not provider or not model:
        flag = prefix.lower()
        raise RagError(f"give both --{flag}-provider and --{flag}-model", field=f"{flag}_model")
    registry.get(provider)  # unknown providers fail here, naming the known ones
    if "\n" in model or "\n" in provider or not model.strip():
        raise RagError("model name is empty or invalid", field="model")
    return {f"{prefix}_PROVIDER": provider, f"{prefix}_MODEL": model.strip()}
