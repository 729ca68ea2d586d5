"""Streaming RFC 4180 CSV: records from byte chunks, and validation against a schema file.

`records()` turns an iterable of byte chunks (a blob download, a file) into records with their
first physical line number and their raw text, holding one chunk and one record in memory at a
time. It handles quoted delimiters, doubled quotes, newlines inside quotes, CRLF/LF/CR line
ends, UTF-8 with or without a BOM, blank lines and empty files. A record that is not valid CSV
(a stray quote, a NUL byte) comes back with `error` set; a file that cannot be read as CSV at all
(not UTF-8, an unterminated quote) raises `CsvFormatError`.

`CsvSchema` is the contract of a file kind, read from YAML: columns (CSV header -> table column),
types, required and sensitive flags. `CsvSchema.bind(header)` checks a header and returns a
`RowConverter` that turns each record into typed, cleaned values or says why it cannot.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

MAX_RECORD_CHARS = 1_000_000  # a record longer than this is an unterminated quote, not data
FIELD_LIMIT = 131_072


class CsvFormatError(ValueError):
    """The file as a whole cannot be read as the expected CSV; retrying will not help."""

    transient = False


@dataclass(frozen=True)
class Record:
    line: int  # physical line (1-based) where the record starts
    fields: list[str] | None  # None when the record is not valid CSV
    raw: str  # the record's text as in the file, line ends included
    error: str | None = None


class _ChunkReader(io.RawIOBase):
    """A readable binary stream over an iterable of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


class _Lines:
    """Physical lines for csv.reader, decoded one at a time (so a bad byte has a line number),
    remembering the ones the current record consumed."""

    def __init__(self, stream: io.BufferedReader, encoding: str):
        self._stream = stream
        self._encoding = encoding
        self.pending: list[str] = []
        self.pending_chars = 0
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        data = self._stream.readline(MAX_RECORD_CHARS + 1)
        if not data:
            raise StopIteration
        self.count += 1
        if self.count == 1 and data.startswith(codecs.BOM_UTF8) and self._encoding == "utf-8":
            data = data[len(codecs.BOM_UTF8):]
        try:
            line = data.decode(self._encoding)
        except UnicodeDecodeError as exc:
            raise CsvFormatError(
                f"line {self.count}: not {self._encoding.upper()} text "
                f"(byte {data[exc.start:exc.start + 1]!r} at column {exc.start + 1} cannot be decoded)"
            ) from None
        self.pending.append(line)
        self.pending_chars += len(line)
        if self.pending_chars > MAX_RECORD_CHARS:
            raise CsvFormatError(
                f"line {self.count - len(self.pending) + 1}: a record longer than {MAX_RECORD_CHARS:,} characters "
                "(an unterminated quoted field, or not line-oriented text?)"
            )
        return line

    def take(self) -> str:
        raw = "".join(self.pending)
        self.pending.clear()
        self.pending_chars = 0
        return raw


def records(chunks: Iterable[bytes], delimiter: str = ",", encoding: str = "utf-8") -> Iterator[Record]:
    """Every non-blank record of a CSV byte stream, header included, in order.

    Lines end with LF or CRLF (a lone CR inside a quoted field is kept as data); a UTF-8 BOM
    at the start is dropped.
    """
    lines = _Lines(io.BufferedReader(_ChunkReader(chunks), buffer_size=1 << 20), encoding)
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raw_text = lines.take()
            message = str(exc)
            if "unexpected end of data" in message:
                raise CsvFormatError(f"line {start}: a quoted field is never closed") from None
            if "field larger than field limit" in message:
                raise CsvFormatError(
                    f"line {start}: a field longer than {FIELD_LIMIT:,} characters (an unterminated quoted field?)"
                ) from None
            yield Record(start, None, raw_text, f"malformed CSV: {message}")
            start = lines.count + 1
            continue
        raw_text = lines.take()
        if fields:  # csv.reader returns [] for a blank line
            yield Record(start, fields, raw_text)
        start = lines.count + 1


# ---------------------------------------------------------------- schema and validation


TYPES = ("text", "integer", "numeric", "date", "timestamp", "boolean")
PG_TYPES = {"text": "text", "integer": "bigint", "numeric": "numeric", "date": "date",
            "timestamp": "timestamp", "boolean": "boolean"}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_SPACES = re.compile(r"\s+")


class RowError(ValueError):
    """One row breaks the schema; the message is the quarantine reason."""


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    source: str
    type: str = "text"
    required: bool = False
    sensitive: bool = False
    case: str | None = None  # lower | upper
    default: str | None = None
    min: Decimal | None = None

    @property
    def pg_type(self) -> str:
        return PG_TYPES[self.type]


@dataclass(frozen=True)
class CsvSchema:
    table: str
    quarantine_table: str
    columns: tuple[ColumnSpec, ...]
    missing: frozenset[str] = frozenset({""})
    derived: tuple[tuple[str, str], ...] = ()
    delimiter: str = ","

    @classmethod
    def from_yaml(cls, path: Path) -> CsvSchema:
        doc = yaml.safe_load(Path(path).read_text())
        columns = []
        for spec in doc["columns"]:
            unknown = set(spec) - {"name", "source", "type", "required", "sensitive", "case", "default", "min"}
            if unknown:
                raise ValueError(f"{path}: column {spec.get('name')!r} has unknown keys {sorted(unknown)}")
            if spec.get("type", "text") not in TYPES:
                raise ValueError(f"{path}: column {spec['name']!r} has unknown type {spec['type']!r}; use one of {TYPES}")
            columns.append(ColumnSpec(
                name=spec["name"], source=spec.get("source", spec["name"]), type=spec.get("type", "text"),
                required=bool(spec.get("required", False)), sensitive=bool(spec.get("sensitive", False)),
                case=spec.get("case"), default=spec.get("default"),
                min=Decimal(str(spec["min"])) if spec.get("min") is not None else None,
            ))
        return cls(
            table=doc["table"], quarantine_table=doc["quarantine_table"], columns=tuple(columns),
            missing=frozenset(doc.get("missing", [""])),
            derived=tuple((d["name"], PG_TYPES[d["type"]]) for d in doc.get("derived", [])),
            delimiter=doc.get("delimiter", ","),
        )

    @property
    def sensitive_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.sensitive]

    def bind(self, header: Record) -> RowConverter:
        """Check the header record; raises CsvFormatError when the file is not this kind of CSV."""
        if header.fields is None:
            raise CsvFormatError(f"line {header.line}: the header is not valid CSV ({header.error})")
        names = [_normalize_name(h) for h in header.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1 and n})
        if duplicates:
            raise CsvFormatError(f"the header repeats column(s) {', '.join(duplicates)}")
        positions = {}
        for column in self.columns:
            source = _normalize_name(column.source)
            positions[column.name] = names.index(source) if source in names else None
        missing = [c.source for c in self.columns if c.required and positions[c.name] is None]
        if missing:
            shown = ", ".join(h.strip()[:40] for h in header.fields[:12])
            raise CsvFormatError(
                f"the header lacks required column(s) {', '.join(missing)} (found: {shown or 'nothing'}); "
                "is this the right kind of file?"
            )
        return RowConverter(self, [positions[c.name] for c in self.columns], len(names))


def _normalize_name(name: str) -> str:
    return _SPACES.sub("_", name.strip().lower())


def clean_text(value: str) -> str:
    """Trim, collapse runs of whitespace, and normalize Unicode to NFC."""
    return unicodedata.normalize("NFC", _SPACES.sub(" ", value.strip()))


@dataclass
class RowConverter:
    schema: CsvSchema
    positions: list[int | None]
    width: int
    encrypt: Callable[[str], str] = field(default=lambda v: v)

    def convert(self, fields: list[str]) -> list[Any]:
        """Typed, cleaned values in schema column order (sensitive ones encrypted); raises RowError."""
        if len(fields) != self.width:
            raise RowError(f"expected {self.width} fields, found {len(fields)}")
        if any("\x00" in f for f in fields):
            raise RowError("contains a NUL character")
        values = []
        problems = []
        for column, position in zip(self.schema.columns, self.positions):
            raw = clean_text(fields[position]) if position is not None else ""
            if raw in self.schema.missing:
                raw = column.default if column.default is not None else None
            if raw is None:
                if column.required:
                    problems.append(f"{column.name}: missing required value")
                values.append(None)
                continue
            try:
                value = _typed(column, raw)
            except RowError as exc:
                problems.append(f"{column.name}: {exc}" if not column.sensitive else f"{column.name}: invalid value")
                values.append(None)
                continue
            values.append(self.encrypt(value) if column.sensitive else value)
        if problems:
            raise RowError("; ".join(problems))
        return values


def _typed(column: ColumnSpec, raw: str) -> Any:
    kind = column.type
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    if kind == "text":
        return raw.lower() if column.case == "lower" else raw.upper() if column.case == "upper" else raw
    if kind == "integer":
        try:
            value = int(raw.replace("_", "x"))
        except ValueError:
            raise RowError(f"{shown!r} is not an integer") from None
        if not -(2**63) <= value < 2**63:
            raise RowError(f"{shown!r} is out of range")
    elif kind == "numeric":
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise RowError(f"{shown!r} is not a number") from None
        if not value.is_finite():
            raise RowError(f"{shown!r} is not a finite number")
    elif kind == "date":
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise RowError(f"{shown!r} is not a date (YYYY-MM-DD)") from None
    elif kind == "timestamp":
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            raise RowError(f"{shown!r} is not an ISO timestamp") from None
    else:  # boolean
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise RowError(f"{shown!r} is not a boolean")
    if column.min is not None and value < column.min:
        raise RowError(f"{shown} is below the minimum {column.min}")
    return value
