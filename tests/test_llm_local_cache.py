"""The local model's converted copy: a GGUF is converted once per file version and later loads read the copy, which
computes exactly what the GGUF does; a cache that cannot be written costs the speed-up, never the model."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from rag_ray.llm.base import ChatMessage
from rag_ray.llm.local import resolve_model
from rag_ray.llm.local.cache import COMPLETE, converted_dir, load_pretrained, load_transformers


class RecordingLoad:
    """The loader, handing out the session's model; records what it was asked to read."""

    def __init__(self, llm: Any):
        self.llm = llm
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, folder: str, gguf: str | None) -> tuple[Any, Any]:
        self.calls.append((folder, gguf))
        return self.llm._tokenizer, self.llm._model


@pytest.mark.slow  # the session's real SmolLM2
def test_a_gguf_is_converted_once_and_the_copy_computes_the_same(local_llm: Any, tmp_path: Path) -> None:
    folder, gguf = resolve_model("SmolLM2-135M-Instruct")
    assert gguf is not None
    load = RecordingLoad(local_llm)
    load_pretrained(folder, gguf, tmp_path, load)
    copy = converted_dir(Path(folder) / gguf, tmp_path)
    assert load.calls == [(folder, gguf)] and (copy / COMPLETE).exists()
    load_pretrained(folder, gguf, tmp_path, load)
    assert load.calls[-1] == (str(copy), None)  # the second start reads the copy
    assert [p.name for p in tmp_path.iterdir()] == [copy.name]  # no partial directory left behind

    tokenizer, model = load_transformers(str(copy), None)
    chat = [{"role": "user", "content": "바벨 핸드북에서 프리셋은 무엇인가요? What is a preset?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ours = local_llm._tokenize([ChatMessage("user", chat[0]["content"])])
    assert ids["input_ids"].tolist() == ours["input_ids"].tolist()
    with torch.inference_mode():
        assert torch.equal(model(**ids).logits, local_llm._model(**ids).logits)


def test_a_new_version_of_the_gguf_gets_its_own_copy(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"v1")
    first = converted_dir(gguf, tmp_path / "cache")
    os.utime(gguf, ns=(0, 1_000_000_000))
    assert converted_dir(gguf, tmp_path / "cache") != first


@pytest.mark.slow
def test_an_unwritable_cache_is_logged_and_the_model_still_loads(local_llm: Any, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    folder, gguf = resolve_model("SmolLM2-135M-Instruct")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    load = RecordingLoad(local_llm)
    with caplog.at_level(logging.WARNING, logger="rag_ray.llm.local.cache"):
        _, model = load_pretrained(folder, gguf, blocked / "cache", load)
    assert model is local_llm._model and "model cache not written" in caplog.text
