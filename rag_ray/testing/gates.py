"""Gates for tests that stop work mid-flight: a turnstile that lets calls through as the test allows them, an
embedder behind one (in-process), and an OpenAI-compatible embedding server behind one (reached from Ray workers).

    gate = Turnstile()                  # closed: every call waits
    embedder = GatedEmbedder(FakeEmbedder(), gate)
    ...                                 # start a job; it blocks in its first embedding call
    gate.wait_entered(1); gate.allow(2) # let that call and one more through
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from rag_ray.testing.fake_servers import FakeOpenAIServer, _Handler
from rag_ray.types import InputType


class Turnstile:
    """Counts calls (``entered``), holds each until a permit is given (``allow``) or the gate is ``open``, counts
    those that passed and the items they carried (texts embedded)."""

    def __init__(self, *, open: bool = False, hold_s: float = 300.0):
        self._cond = threading.Condition()
        self._permits = 0
        self._open = open
        self.hold_s = hold_s  # a held call gives up after this long (a test that forgot to open the gate)
        self.entered = 0
        self.passed = 0
        self.items = 0

    def allow(self, n: int = 1) -> None:
        with self._cond:
            self._permits += n
            self._cond.notify_all()

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._open, self._permits = False, 0

    def pass_through(self, items: int = 0) -> None:
        """Wait for a permit (in short waits, so an interrupt of the calling thread is delivered)."""
        deadline = time.monotonic() + self.hold_s
        with self._cond:
            self.entered += 1
            self._cond.notify_all()
            while not self._open and self._permits <= 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("turnstile held a call too long")
                self._cond.wait(0.05)
            if not self._open:
                self._permits -= 1
            self.passed += 1
            self.items += items
            self._cond.notify_all()

    def wait_for(self, *, entered: int | None = None, passed: int | None = None, timeout_s: float = 120) -> None:
        """Block until at least ``entered`` calls arrived / ``passed`` calls went through."""
        def reached() -> bool:
            return (entered is None or self.entered >= entered) and (passed is None or self.passed >= passed)

        with self._cond:
            if not self._cond.wait_for(reached, timeout_s):
                raise TimeoutError(f"turnstile: entered {self.entered}, passed {self.passed}")

    def snapshot(self) -> tuple[int, int, int]:
        with self._cond:
            return self.entered, self.passed, self.items


class GatedEmbedder:
    """An embedder whose every ``embed`` call goes through ``gate`` first (``inner``: e.g. ``FakeEmbedder()``)."""

    def __init__(self, inner: Any, gate: Turnstile):
        self.inner, self.gate = inner, gate
        self.provider, self.model, self.dimension = inner.provider, inner.model, inner.dimension

    def embed(self, texts: Sequence[str], *, input_type: InputType = "document") -> np.ndarray:
        self.gate.pass_through(len(texts))
        result: np.ndarray = self.inner.embed(texts, input_type=input_type)
        return result


class GatedEmbeddingServer(FakeOpenAIServer):
    """The fake OpenAI server whose ``/v1/embeddings`` requests go through ``gate`` (held on the server's thread):
    a gate that Ray workers in other processes meet."""

    def __init__(self, gate: Turnstile, **kwargs: Any):
        super().__init__(**kwargs)
        self.gate = gate

    def embeddings(self, handler: _Handler, body: dict[str, Any], *rest: Any) -> None:
        inputs = body.get("input", [])
        self.gate.pass_through(1 if isinstance(inputs, str) else len(inputs))
        super().embeddings(handler, body, *rest)
