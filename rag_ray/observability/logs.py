"""Logging for every entry point: one call, ``configure_logging(settings)``, at the start of the process.

- Every line carries the request id and job id of the code that wrote it (``ContextFilter``), ``-`` outside one.
- Lines go to stderr and to a rotating ``<data dir>/logs/app.log`` (``RAG_LOG_FILE``, ``RAG_LOG_MAX_BYTES``,
  ``RAG_LOG_BACKUP_COUNT``), as JSON objects (``RAG_LOG_JSON``, the default) or text; ``grep ERROR`` finds errors in
  both (``"level": "ERROR"``).
- Secrets never reach a sink (``SecretMasker``): the configured secret values (API keys, ``SECRET_KEY``, passwords,
  tokens), the bearer token / API key of the request being served, and anything shaped like a credential
  (``Bearer …``, ``password=…``, ``"api_key": "…"``, URL user info, JWTs, ``rr_`` API keys) are replaced by
  ``********`` in the message, its arguments, extra fields and tracebacks.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from rag_ray.config import Settings
from rag_ray.observability.context import current_job_id, current_request_id, request_secrets_var

MASK = "********"
LOG_FILE = Path("logs") / "app.log"
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words

_CREDENTIAL_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]+"), rf"\1\2{MASK}"),
    (re.compile(r"(?i)(\b(?:password|passwd|pwd|secret|secret_key|token|access_token|refresh_token|api[_-]?key|"
                r"apikey|client_secret|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)([^\"'\s,&;}\]]+)"),
     rf"\1{MASK}"),
    (re.compile(r"(://[^/\s:@]+:)([^@\s/]+)(@)"), rf"\1{MASK}\3"),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"), MASK),
    (re.compile(r"\b(rr_|sk-)[A-Za-z0-9_\-]{12,}"), rf"\1{MASK}"),
)
# one search for any of them first: most strings (an access line's method, path, user) hold none, and five
# substitutions per string were a third of an access line's cost
_ANY_CREDENTIAL = re.compile("|".join(f"(?:{pattern.pattern.removeprefix('(?i)')})"
                                      for pattern, _ in _CREDENTIAL_PATTERNS), re.IGNORECASE)

# attributes every LogRecord has; anything else on a record is an ``extra`` field
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "request_id", "job_id"}


class ContextFilter(logging.Filter):
    """Stamps ``request_id`` and ``job_id`` (``-`` when unset) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        record.job_id = current_job_id() or "-"
        return True


class SecretMasker(logging.Filter):
    """Masks secrets in the final text of a record (message with its arguments, extras, traceback).

    The record is rewritten in place, so every handler downstream sees the masked text."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        self._formatter = logging.Formatter()

    def mask(self, text: str) -> str:
        for secret in (*self.secrets, *request_secrets_var.get()):
            if secret in text:
                text = text.replace(secret, MASK)
        if _ANY_CREDENTIAL.search(text):
            for pattern, replacement in _CREDENTIAL_PATTERNS:
                text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_masked", False):  # each handler runs its filters: mask a record once
            return True
        record._masked = True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self.mask(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, request_id, job_id, message, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name,
            "request_id": getattr(record, "request_id", "-"), "job_id": getattr(record, "job_id", "-"),
            "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                body[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            body["exc"] = record.exc_text
        if record.stack_info:
            body["stack"] = record.stack_info
        return json.dumps(body, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] [job %(job_id)s] %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


class AppLogFileHandler(logging.handlers.RotatingFileHandler):
    """``logs/app.log`` under the data dir, rotated by size; the file (and directory) appear with the first line."""

    def __init__(self, path: Path, max_bytes: int, backup_count: int):
        super().__init__(path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True)
        self.rotates = True

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        stream = super()._open()
        # only a regular file is rotated, as RotatingFileHandler does: app.log may be a symlink to a pipe or
        # /dev/stdout (a container's log), which has no size to check. Known once per open, not stat'ed per line.
        self.rotates = os.path.isfile(self.baseFilename)
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        """Each record formatted once: ``RotatingFileHandler`` formats it a second time (and stats the file) only to
        learn its length for the size check."""
        try:
            line = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
            if self.rotates and self.maxBytes > 0 and self.stream.tell() + len(line) >= self.maxBytes:
                self.doRollover()
                if self.stream is None:  # closed by the rollover (``delay``)
                    self.stream = self._open()
            self.stream.write(line)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


_installed: list[logging.Handler] = []
# loggers that write request data at INFO/DEBUG (SQL with its parameters, form fields), or a line per alembic plugin
# on every schema check (nine of a first start's sixteen lines): WARNING whatever the level
QUIET_LOGGERS = ("sqlalchemy.engine", "python_multipart", "multipart", "alembic.runtime.plugins")


def secret_values(settings: Settings) -> list[str]:
    """Every secret value the settings hold (they are masked wherever they appear in a log line)."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        items = value if isinstance(value, list) else [value]
        values += [v.get_secret_value() for v in items if isinstance(v, SecretStr)]
    values += _provider_keys(settings)
    values += [v for v in (_url_password(settings), settings.milvus_token_value, _stored_secret(settings)) if v]
    return [v for v in values if v]


def _provider_keys(settings: Settings) -> list[str]:
    keys: list[str] = []
    for raw in (settings.llm_providers_json, settings.embedding_providers_json):
        try:
            specs = json.loads(raw.get_secret_value()) if raw is not None else []
        except ValueError:
            continue
        keys += [str(s["api_key"]) for s in specs if isinstance(s, dict) and s.get("api_key")]
    return keys


def _url_password(settings: Settings) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(settings.metadata_url).password
        return str(password) if password else None
    except Exception:  # an invalid URL or DB_TYPE is reported by whoever connects
        return None


def _stored_secret(settings: Settings) -> str | None:
    """The generated ``SECRET_KEY`` kept in the data dir (read, never created here)."""
    path = settings.resolved_data_dir / "secret.key"
    try:
        return path.read_text().strip() if settings.secret_key is None and path.is_file() else None
    except OSError:
        return None


def log_file_path(settings: Settings) -> Path:
    return settings.resolved_data_dir / LOG_FILE


def configure_logging(settings: Settings, *, stderr_level: int | str | None = None,
                      file_level: int | str | None = None, to_stderr: bool = True) -> Path | None:
    """Install rag-ray's handlers on the root logger (replacing ones an earlier call installed).

    ``stderr_level``/``file_level`` default to ``RAG_LOG_LEVEL``. ``to_stderr=False``: the log file only, where there
    is one (a process whose stderr its host already copies into a log file). Returns the log file's path (None: no
    file)."""
    reset_logging()
    level = logging.getLevelName(settings.log_level.upper())
    formatter: logging.Formatter = JsonFormatter() if settings.log_json else logging.Formatter(TEXT_FORMAT)
    filters: list[logging.Filter] = [ContextFilter(), SecretMasker(secret_values(settings))]
    handlers: list[tuple[logging.Handler, int]] = []
    path = log_file_path(settings) if settings.log_file else None
    if path is not None:
        handlers.append((AppLogFileHandler(path, settings.log_max_bytes, settings.log_backup_count),
                         _level(file_level, level)))
    if to_stderr or path is None:
        handlers.append((StderrHandler(), _level(stderr_level, level)))
    root = logging.getLogger()
    for handler, handler_level in handlers:
        handler.setLevel(handler_level)
        handler.setFormatter(formatter)
        for f in filters:
            handler.addFilter(f)
        root.addHandler(handler)
        _installed.append(handler)
    root.setLevel(min(h.level for h, _ in handlers))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return path


def _level(value: int | str | None, default: int) -> int:
    if value is None:
        return default
    return value if isinstance(value, int) else int(logging.getLevelName(value.upper()))


def reset_logging() -> None:
    """Remove (and close) the handlers ``configure_logging`` installed."""
    root = logging.getLogger()
    while _installed:
        handler = _installed.pop()
        root.removeHandler(handler)
        handler.close()
