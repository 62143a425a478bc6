"""Progress listeners that report to the outside world (the seed's ``progress_callback_url``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rag_ray.config import Settings
from rag_ray.ingest.callbacks import ProgressNotifier, validate_callback_url
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.ingest.tracking import JobProgress, ProgressListener

FINAL_STATES = ("succeeded", "failed", "cancelled")


def check_callback_url(settings: Settings, url: str) -> str:
    """Submit-time SSRF check (scheme, allowlist, resolution to public addresses unless allowed)."""
    return validate_callback_url(url, allow_private=settings.callback_allow_private,
                                 allowed_hosts=settings.callback_allowed_hosts or None)


class CallbackListener:
    """Posts job progress at most every ``interval_s`` seconds, and always the final state."""

    def __init__(self, settings: Settings, url: str, interval_s: float = 1.0):
        self.notifier = ProgressNotifier(url, settings.callback_signing_key(),
                                         allow_private=settings.callback_allow_private,
                                         allowed_hosts=settings.callback_allowed_hosts or None)
        self.interval_s = interval_s
        self._last = 0.0

    def __call__(self, progress: JobProgress) -> None:
        final = progress.status in FINAL_STATES
        now = time.monotonic()
        if not final and now - self._last < self.interval_s:
            return
        self._last = now
        payload = progress.to_dict()
        payload.pop("errors", None)
        self.notifier.notify("job.finished" if final else "job.progress", payload)

    def close(self) -> None:
        self.notifier.close()


@contextmanager
def callback_listeners(settings: Settings, request: FileIngestRequest) -> Iterator[list[ProgressListener]]:
    """The listeners a job needs for its request (the progress callback, when one was asked for)."""
    if not request.callback_url:
        yield []
        return
    listener = CallbackListener(settings, request.callback_url)
    try:
        yield [listener]
    finally:
        listener.close()
