"""File parsers: bytes of a txt/md/pdf/docx/xlsx file → normalised text plus metadata.

Each parser is registered in ``PARSERS`` under the file extensions it reads and turns raw bytes into
a ``RawText``; ``parse_file`` / ``parse_bytes`` add the common metadata, normalise the text and
turn the libraries' many exception types into ``SourceError``.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_ray.errors import InvalidInput, PayloadTooLarge, RagError, SourceError
from rag_ray.registry import Registry
from rag_ray.text.normalize import normalize_text
from rag_ray.types import ParsedDocument

# pypdf logs recoverable oddities of real-world PDFs at WARNING ("fontTools is required…",
# "Ignoring wrong pointing object…"); the text is still extracted, so they are noise in ingest logs.
# An application that configured the pypdf logger itself keeps its setting.
_PYPDF_LOGGER = logging.getLogger("pypdf")
if _PYPDF_LOGGER.level == logging.NOTSET:
    _PYPDF_LOGGER.setLevel(logging.ERROR)


@dataclass
class RawText:
    """What a parser extracted, before normalisation."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


PARSERS: Registry[RawText] = Registry("file parser")


# ---- txt ----
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _mostly_hangul(text: str) -> bool:
    non_ascii = [ch for ch in text if ord(ch) > 127]
    hangul = sum(1 for ch in non_ascii if "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e")
    return bool(non_ascii) and hangul / len(non_ascii) >= 0.5


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes of unknown encoding: UTF-8 (with or without BOM), UTF-16 with BOM, CP949, else Latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith(_UTF16_BOMS):
        return data.decode("utf-16", errors="replace"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        # CP949 accepts many Latin-1 byte pairs too; only trust it when the result reads as Korean.
        text = data.decode("cp949")
        if _mostly_hangul(text):
            return text, "cp949"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


@PARSERS.register("txt")
def parse_txt(data: bytes) -> RawText:
    text, encoding = decode_text(data)
    return RawText(text, {"encoding": encoding})


# ---- markdown ----
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_ATX_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$")
_HTML_TAG = re.compile(r"<[^>]+>")


def markdown_title(text: str) -> str | None:
    """The first level-1 ATX heading outside fenced code blocks (``# or`` in a shell block is no title)."""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _ATX_H1.match(line)
        if match:
            title = _HTML_TAG.sub("", match.group(1)).strip()
            if title:
                return title
    return None


@PARSERS.register("md")
@PARSERS.register("markdown")
def parse_markdown(data: bytes) -> RawText:
    text, encoding = decode_text(data)
    # Comments hold drafts and notes the reader never sees; they would only pollute retrieval.
    text = _HTML_COMMENT.sub("", text)
    metadata: dict[str, Any] = {"encoding": encoding}
    title = markdown_title(text)
    if title:
        metadata["title"] = title
    return RawText(text, metadata)


# ---- pdf ----
_FILE_NAME_LIKE = re.compile(r"\.(pdf|docx?|xlsx?|pptx?|txt|hwp)$", re.IGNORECASE)


def _useful_title(title: object) -> str | None:
    """A document-property title, unless it is empty or just a file name (common in exported PDFs)."""
    if not isinstance(title, str):
        return None
    title = title.strip()
    return title if title and not _FILE_NAME_LIKE.search(title) else None


@PARSERS.register("pdf")
def parse_pdf(data: bytes) -> RawText:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise ValueError("the PDF is encrypted with a password")
    texts = [(page.extract_text() or "").strip() for page in reader.pages]
    metadata: dict[str, Any] = {"pages": len(texts), "empty_pages": sum(1 for text in texts if not text)}
    title = _useful_title(reader.metadata.title if reader.metadata else None)
    if title:
        metadata["title"] = title
    return RawText("\n\n".join(text for text in texts if text), metadata)


# ---- docx ----
_HEADING_STYLE = re.compile(r"^Heading (\d)$")


def _heading_level(style_name: str) -> int | None:
    if style_name == "Title":
        return 1
    match = _HEADING_STYLE.match(style_name)
    return int(match.group(1)) if match else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _table_rows(table: Any) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a merged cell is repeated once per grid column it spans
                continue
            previous = cell._tc
            cells.append(_one_line(cell.text))
        if any(cells):
            yield " | ".join(cells)


@PARSERS.register("docx")
def parse_docx(data: bytes) -> RawText:
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    first_heading = None
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = list(_table_rows(item))
            if rows:
                blocks.append("\n".join(rows))
            continue
        text = item.text.strip()
        if not text:
            continue
        level = _heading_level(item.style.name if item.style is not None else "")
        if level is not None:
            first_heading = first_heading or text
            text = f"{'#' * level} {text}"
        blocks.append(text)
    metadata: dict[str, Any] = {}
    title = _useful_title(document.core_properties.title) or first_heading
    if title:
        metadata["title"] = title
    return RawText("\n\n".join(blocks), metadata)


# ---- xlsx ----
def format_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return _one_line(str(value))


_HEADER_LOOKAHEAD = 20  # rows read before deciding which one is the header


def sheet_lines(rows: Iterable[tuple[object, ...]]) -> Iterator[str]:
    """One line per non-empty row: ``Header: value; …`` for the rows after the header row.

    The header is the first non-empty row that is about as wide as the table (at least two values
    and half the widest of the first rows), so title rows above a table ("Stanley Cups",
    "In millions of CHF") become plain lines instead of column names. A sheet of single values uses
    its first row as the header. Rows repeating the header (a second table under it) are skipped.
    """
    cells_rows = ([format_cell(value) for value in raw] for raw in rows)
    filled_rows = (cells for cells in cells_rows if any(cells))
    head: list[list[str]] = []
    for cells in filled_rows:
        head.append(cells)
        if len(head) >= _HEADER_LOOKAHEAD:
            break
    if not head:
        return
    widest = max(_filled(cells) for cells in head)
    needed = max(2, (widest + 1) // 2) if widest >= 2 else 1
    at = next(index for index, cells in enumerate(head) if _filled(cells) >= needed)
    yield from (" ".join(cell for cell in cells if cell) for cells in head[:at])
    header = head[at]
    for cells in itertools.chain(head[at + 1:], filled_rows):
        if cells != header:
            yield _record(header, cells)


def _filled(cells: list[str]) -> int:
    return sum(1 for cell in cells if cell)


def _record(header: list[str], cells: list[str]) -> str:
    pairs = []
    for index, cell in enumerate(cells):
        if not cell:
            continue
        name = header[index] if index < len(header) else ""
        pairs.append(f"{name}: {cell}" if name else cell)
    return "; ".join(pairs)


@PARSERS.register("xlsx")
def parse_xlsx(data: bytes) -> RawText:
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        names = list(workbook.sheetnames)
        sections = []
        for sheet in workbook.worksheets:
            lines = list(sheet_lines(sheet.iter_rows(values_only=True)))
            if lines:
                sections.append("\n".join([f"## Sheet: {sheet.title}", *lines]))
        metadata: dict[str, Any] = {"sheets": len(names), "sheet_names": names}
        title = _useful_title(workbook.properties.title)
    finally:
        workbook.close()
    if title:
        metadata["title"] = title
    return RawText("\n\n".join(sections), metadata)


# ---- public API ----
SUPPORTED_TYPES: frozenset[str] = frozenset(PARSERS.names())


def file_type(path: str | os.PathLike[str]) -> str:
    """The lower-case extension without the dot (``"pdf"``); ``""`` when there is none."""
    return Path(path).suffix.lower().lstrip(".")


def _check_type(ftype: str, file_name: str) -> None:
    if ftype not in SUPPORTED_TYPES:
        supported = ", ".join(sorted(SUPPORTED_TYPES))
        raise InvalidInput(f"unsupported file type {ftype or '(none)'!r} for {file_name!r}; supported: {supported}",
                           field="file_type", details={"file_type": ftype, "supported": sorted(SUPPORTED_TYPES)})


def _check_size(size: int, max_bytes: int | None, where: str) -> None:
    if max_bytes is not None and size > max_bytes:
        raise PayloadTooLarge(f"{where} is {size} bytes, more than the limit of {max_bytes}",
                              field="max_file_bytes", details={"size_bytes": size, "max_bytes": max_bytes})


def _parse(data: bytes, ftype: str, source_uri: str, file_name: str) -> ParsedDocument:
    try:
        with warnings.catch_warnings():
            # openpyxl/pypdf warn about unsupported-but-harmless features (data validation, styles).
            warnings.simplefilter("ignore")
            raw = PARSERS.create(ftype, data)
    except RagError:
        raise
    except Exception as exc:  # the libraries raise anything from KeyError to zipfile.BadZipFile
        reason = f"{type(exc).__name__}: {exc}"
        raise SourceError(f"cannot parse {source_uri} as {ftype}: {reason}",
                          details={"path": source_uri, "file_type": ftype, "reason": reason}) from exc
    metadata = {**raw.metadata, "file_type": ftype, "file_name": file_name, "size_bytes": len(data)}
    return ParsedDocument(source_uri=source_uri, text=normalize_text(raw.text), metadata=metadata)


def parse_file(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> ParsedDocument:
    """Parse a file on disk; ``source_uri`` is its absolute path."""
    absolute = os.path.abspath(path)
    name = os.path.basename(absolute)
    ftype = file_type(absolute)
    _check_type(ftype, name)
    try:
        _check_size(os.stat(absolute).st_size, max_bytes, absolute)
        with open(absolute, "rb") as handle:  # bounded read: the file may have grown since stat
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        _check_size(len(data), max_bytes, absolute)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SourceError(f"cannot read {absolute}: {reason}",
                          details={"path": absolute, "file_type": ftype, "reason": reason}) from exc
    return _parse(data, ftype, absolute, name)


def parse_bytes(data: bytes, file_name: str, *, source_uri: str | None = None,
                max_bytes: int | None = None) -> ParsedDocument:
    """Parse an upload; the type comes from ``file_name`` (directory parts are ignored)."""
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    ftype = file_type(name)
    _check_type(ftype, name)
    _check_size(len(data), max_bytes, name)
    return _parse(bytes(data), ftype, source_uri or f"upload://{name}", name)
