"""Load a local model, from a converted copy when its source is a GGUF file.

transformers reads a GGUF by parsing every field in Python, de-quantizing every tensor and building a fast tokenizer
from the GGUF vocabulary: ~22 s for SmolLM2-135M on 2 cores, at every replica start (and every autoscaled replica).
The first load saves what it built (safetensors weights, ``tokenizer.json``) in a per-user cache keyed by the GGUF's
path, size and modification time; later loads read that copy in about a second. The cache is only an optimisation: a
directory that cannot be written is logged and skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
COMPLETE = "rag-ray-converted"  # written last: a copy without it is partial (a crash mid-save) and is not used


def default_cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME/rag-ray/models`` (``~/.cache/rag-ray/models``), the platform's per-user cache; None for a
    user without a home directory."""
    try:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rag-ray" / "models"
    except RuntimeError:  # Path.home(): no HOME and no passwd entry
        return None


def converted_dir(gguf: Path, cache_dir: Path) -> Path:
    """Where the converted copy of ``gguf`` lives: a new file (other size or mtime) gets a new copy."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / f"{gguf.stem}-{key}"


def load_transformers(folder: str, gguf: str | None) -> tuple[Any, Any]:
    """(tokenizer, float32 causal LM) of ``folder``, read from its GGUF file ``gguf`` when given."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    return tokenizer, model


def load_pretrained(folder: str, gguf: str | None, cache_dir: Path | None,
                    load: Callable[[str, str | None], tuple[Any, Any]] = load_transformers) -> tuple[Any, Any]:
    """(tokenizer, model) of ``folder`` (a GGUF file in it when ``gguf``), via the cache when one is given."""
    if gguf is None or cache_dir is None:
        return load(folder, gguf)
    copy = converted_dir(Path(folder) / gguf, cache_dir)
    if (copy / COMPLETE).exists():
        return load(str(copy), None)
    tokenizer, model = load(folder, gguf)
    _save(copy, tokenizer, model)
    return tokenizer, model


def _save(copy: Path, tokenizer: Any, model: Any) -> None:
    """Write to a private directory, then rename it into place: concurrent first loads (two replicas) each write
    their own, one rename wins, and a reader never sees a half-written copy."""
    partial = copy.with_name(f"{copy.name}.partial-{os.getpid()}")
    try:
        tokenizer.save_pretrained(partial)
        _save_weights(model, partial)
        (partial / COMPLETE).touch()
        partial.rename(copy)
        log.info("saved a converted copy of the model to %s", copy)
    except OSError as exc:  # unwritable cache, disk full, or another process renamed its copy first
        if (copy / COMPLETE).exists():
            return
        log.warning("model cache not written (%s: %s); the next start converts the GGUF again",
                    type(exc).__name__, exc)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _save_weights(model: Any, target: Path) -> None:
    """The de-quantized float32 weights as a plain checkpoint (``save_pretrained`` refuses a model loaded from a
    GGUF: it still carries the GGUF quantizer, though its weights are float32 tensors by now)."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (target / "config.json").write_text(json.dumps(config, indent=1))
    model.generation_config.save_pretrained(target)
    save_model(model, str(target / "model.safetensors"), metadata={"format": "pt"})  # one copy of tied weights
