"""Find the files an ingest should look at, confined to allowed roots.

A path the caller names is checked before any system call (NUL bytes, overlong names) and must resolve under
an allowed root. A bad entry found inside the directory (a symlink out of the roots, a broken symlink, an
unreadable or special file) does not fail the scan: it is returned in ``Scan.rejected`` with its reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag_ray.errors import InvalidInput, PermissionDenied, RagError
from rag_ray.sources.files import file_type

MAX_FILES_PER_JOB = 100_000
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX: one path component


@dataclass(frozen=True)
class FileEntry:
    path: Path
    size: int
    mtime_ns: int

    @property
    def file_type(self) -> str:
        return self.path.suffix.lower().lstrip(".")


def check_path(path: str | os.PathLike[str], field: str = "path") -> Path:
    """``path`` if a file system could hold it: no NUL byte, valid Unicode, components and whole within the
    kernel's limits. Checked before any system call (those raise ValueError or ENAMETOOLONG instead)."""
    text = os.fspath(path)
    if "\x00" in text:
        raise InvalidInput(f"{field} may not contain NUL bytes", field=field)
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} is not valid Unicode", field=field) from None
    if len(raw) > MAX_PATH_BYTES:
        raise InvalidInput(f"{field} is longer than {MAX_PATH_BYTES} bytes", field=field)
    if any(len(part) > MAX_NAME_BYTES for part in raw.split(b"/")):
        raise InvalidInput(f"{field} has a name longer than {MAX_NAME_BYTES} bytes", field=field)
    return Path(text)


def confine(path: Path, roots: Sequence[Path]) -> Path:
    """Resolve ``path`` (following symlinks) and insist it lies under one of ``roots``."""
    resolved = _resolve(check_path(path, "directory").expanduser(), "directory")
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    allowed = ", ".join(str(root) for root in roots)  # the caller is an admin: where to put files, or what to set
    raise PermissionDenied(f"path {str(path)!r} is outside the allowed roots ({allowed}; RAG_ALLOWED_ROOTS)",
                           field="directory")


def _resolve(path: Path, field: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise InvalidInput(f"{field} cannot be resolved: {_reason(exc)}", field=field) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RagError):
        return exc.message
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def _matches(name: str, rel: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in patterns)


@dataclass(frozen=True)
class FileSelection:
    """Which files under ``root`` an ingest covers. The same test decides which manifest entries are
    in scope for deletion, so ``--file-types pdf`` never deletes the text files ingested earlier."""

    root: Path
    recursive: bool = True
    types: frozenset[str] = frozenset()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def matches(self, path: Path) -> bool:
        if path == self.root:
            rel = path.name
        elif path.is_relative_to(self.root):
            rel = str(path.relative_to(self.root))
            if not self.recursive and os.sep in rel:
                return False
        else:
            return False
        if path.suffix.lower().lstrip(".") not in self.types:
            return False
        if self.include and not _matches(path.name, rel, self.include):
            return False
        return not (self.exclude and _matches(path.name, rel, self.exclude))


def make_selection(root: Path, *, recursive: bool = True, file_types: Iterable[str] | None = None,
                   include: Sequence[str] = (), exclude: Sequence[str] = (), supported: Iterable[str] = (),
                   roots: Sequence[Path] | None = None) -> FileSelection:
    root = check_path(root)
    root = confine(root, roots) if roots is not None else _resolve(root.expanduser(), "path")
    try:
        exists = root.exists()
    except OSError as exc:  # e.g. a parent directory the server may not search
        raise InvalidInput(f"path {str(root)!r} cannot be read: {_reason(exc)}", field="path") from exc
    if not exists:
        raise InvalidInput(f"path {str(root)!r} does not exist", field="path")
    wanted = _wanted_types(file_types, {t.lower() for t in supported})
    return FileSelection(root, recursive, frozenset(wanted), tuple(include), tuple(exclude))


@dataclass(frozen=True)
class Rejected:
    """An entry the scan found but will not ingest, and why (recorded on the job as a per-file error)."""

    path: Path
    reason: str


@dataclass
class Scan:
    entries: list[FileEntry] = field(default_factory=list)  # sorted by path, one per real file
    rejected: list[Rejected] = field(default_factory=list)


def scan_files(selection: FileSelection, roots: Sequence[Path] | None = None) -> Scan:
    """The selected files, sorted by path for determinism; bad entries are rejected one by one."""
    scan = Scan()
    root = selection.root
    candidates = [root] if not root.is_dir() else _walk(root, selection.recursive, scan.rejected)
    found: dict[Path, FileEntry] = {}
    for path in candidates:
        if not selection.matches(path):
            continue
        try:
            entry = _entry(path, roots)
        except (RagError, OSError, RuntimeError) as exc:
            scan.rejected.append(Rejected(path, _reason(exc)))
            continue
        found.setdefault(entry.path, entry)  # a symlink to a file also listed directly: ingest it once
        if len(found) > MAX_FILES_PER_JOB:
            raise InvalidInput(f"more than {MAX_FILES_PER_JOB} files in one job; split the directory", field="path")
    scan.entries = sorted(found.values(), key=lambda e: str(e.path))
    return scan


def _entry(path: Path, roots: Sequence[Path] | None) -> FileEntry:
    """``path`` as a readable regular file under ``roots``, else an error saying why not."""
    if roots is not None:
        try:
            confine(path, roots)  # a symlink inside the root may point outside it
        except PermissionDenied:
            raise PermissionDenied("a symlink to outside the allowed roots") from None
    resolved = path.resolve(strict=True)  # a broken symlink: FileNotFoundError
    info = resolved.stat()
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the reader forever
        raise InvalidInput("not a regular file", field="path")
    if not os.access(resolved, os.R_OK):
        raise PermissionError(13, "Permission denied")
    return FileEntry(resolved, info.st_size, info.st_mtime_ns)


def _wanted_types(file_types: Iterable[str] | None, supported: set[str]) -> set[str]:
    if not file_types:
        return supported
    wanted = {t.lower().lstrip(".") for t in file_types if t.strip()}
    unknown = wanted - supported
    if unknown:
        raise InvalidInput(f"unsupported file type(s) {sorted(unknown)}; supported: {sorted(supported)}",
                           field="file_types")
    return wanted


def _walk(root: Path, recursive: bool, rejected: list[Rejected]) -> list[Path]:
    """Every non-directory entry (broken symlinks included, so they are reported); unreadable directories are
    rejected, not skipped in silence."""
    if not recursive:
        try:
            return [p for p in root.iterdir() if not p.is_dir()]
        except OSError as exc:
            rejected.append(Rejected(root, _reason(exc)))
            return []

    def unreadable(exc: OSError) -> None:
        rejected.append(Rejected(Path(exc.filename or root), _reason(exc)))

    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return found


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def order_tasks(tasks: list[dict[str, object]], strategy: str) -> list[dict[str, object]]:
    """File tasks in the order a job should process them (``batch_config.processing_strategy``):

    - ``fifo``: the scan's order (sorted by path);
    - ``size_based``: smallest file first, so the most documents become searchable soonest;
    - ``priority_based``: most recently modified first: the newest documents are the likeliest to be asked about.

    Tasks without a ``path`` (database partitions) and files gone since the scan keep their relative order, last.
    """
    if strategy == "fifo":
        return list(tasks)
    stats = {id(t): stat_or_none(t.get("path")) for t in tasks}
    present = [t for t in tasks if stats[id(t)] is not None]
    if strategy == "size_based":
        present.sort(key=lambda t: stats[id(t)].st_size)  # type: ignore[union-attr]
    elif strategy == "priority_based":
        present.sort(key=lambda t: -stats[id(t)].st_mtime_ns)  # type: ignore[union-attr]
    else:
        raise InvalidInput(f"processing_strategy must be one of fifo, size_based, priority_based, got {strategy!r}",
                           field="batch_config.processing_strategy")
    return present + [t for t in tasks if stats[id(t)] is None]


def stat_or_none(path: object) -> os.stat_result | None:
    """A file task's file, or None for a database partition (no path) or a file gone since the scan."""
    if not isinstance(path, str):
        return None
    try:
        return os.stat(path)
    except OSError:
        return None


# Text per stored byte of the compressed/binary formats, measured on ../shared/data/documents and rounded up (PDF
# 0.005-0.032, DOCX 0.34, XLSX 0.06-0.40): a PDF's bytes alone overcounted its text ~40x.
TEXT_PER_BYTE = {"pdf": 0.05, "docx": 0.4, "xlsx": 0.4}


def estimated_text_bytes(path: object) -> int:
    """About how many bytes of text a file task yields (0 for a database partition or a file gone since the scan)."""
    stat_result = stat_or_none(path)
    if stat_result is None:
        return 0
    return int(stat_result.st_size * TEXT_PER_BYTE.get(file_type(str(path)), 1.0))
