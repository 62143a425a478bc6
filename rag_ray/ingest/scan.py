"""Find the files an ingest should look at, confined to allowed roots."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag_ray.errors import InvalidInput, PermissionDenied

MAX_FILES_PER_JOB = 100_000


@dataclass(frozen=True)
class FileEntry:
    path: Path
    size: int
    mtime_ns: int

    @property
    def file_type(self) -> str:
        return self.path.suffix.lower().lstrip(".")


def confine(path: Path, roots: Sequence[Path]) -> Path:
    """Resolve ``path`` (following symlinks) and insist it lies under one of ``roots``."""
    resolved = path.expanduser().resolve()
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise PermissionDenied(f"path {str(path)!r} is outside the allowed roots", field="directory")


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
    root = confine(root, roots) if roots is not None else root.expanduser().resolve()
    if not root.exists():
        raise InvalidInput(f"path {str(root)!r} does not exist", field="path")
    wanted = _wanted_types(file_types, {t.lower() for t in supported})
    return FileSelection(root, recursive, frozenset(wanted), tuple(include), tuple(exclude))


def scan_files(selection: FileSelection, roots: Sequence[Path] | None = None) -> list[FileEntry]:
    """List the selected files, sorted by path for determinism."""
    root = selection.root
    candidates = [root] if root.is_file() else _walk(root, selection.recursive)
    entries: list[FileEntry] = []
    for path in candidates:
        if not selection.matches(path):
            continue
        if roots is not None:
            confine(path, roots)  # a symlink inside the root may point outside it
        stat = path.stat()
        entries.append(FileEntry(path.resolve(), stat.st_size, stat.st_mtime_ns))
        if len(entries) > MAX_FILES_PER_JOB:
            raise InvalidInput(f"more than {MAX_FILES_PER_JOB} files in one job; split the directory", field="path")
    return sorted(entries, key=lambda e: str(e.path))


def _wanted_types(file_types: Iterable[str] | None, supported: set[str]) -> set[str]:
    if not file_types:
        return supported
    wanted = {t.lower().lstrip(".") for t in file_types if t.strip()}
    unknown = wanted - supported
    if unknown:
        raise InvalidInput(f"unsupported file type(s) {sorted(unknown)}; supported: {sorted(supported)}",
                           field="file_types")
    return wanted


def _walk(root: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return [p for p in root.iterdir() if p.is_file()]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return found


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
