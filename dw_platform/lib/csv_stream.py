"""Streaming CSV for bronze: byte chunks in, validated Arrow batches and rejected records out.

Values land as they arrived: every field is the exact text between the delimiters (quotes
removed, doubled quotes undone), unless the schema file declares a rule for that column.

How a file is read (`CsvReader.batches`), one chunk at a time, memory bounded by a chunk plus
the longest record allowed:

1. Framing (`_Framer`, numpy over the raw bytes): record boundaries by RFC 4180 quote parity,
   the first physical line of each record (LF, CRLF or a lone CR end a line, inside quotes too),
   and the records that cannot be loaded as they are: a quote that does not open or close a
   field (`O"Brien`, `"a"b`), a NUL byte, bytes that are not UTF-8, a record longer than
   `max_record_bytes`, a quoted field never closed (the record runs to the end of the file).
   Each keeps its exact raw bytes and line number for the quarantine.
2. Parsing the well-formed records (pyarrow's C++ CSV parser, every column as text); a record
   with the wrong number of fields comes back through pyarrow's invalid-row handler, by position.
3. Validation and declared rules (pyarrow compute, whole columns at once): required values,
   types (checked, not converted: the text lands), minimums, field sizes.

A file that is not this kind of CSV at all (no usable header, gzip that is not gzip, UTF-16, a
ZIP archive) raises `CsvFormatError`. Compressed files (gzip, bzip2, zstd) are read directly.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import yaml

from dw_platform.lib.compression import CompressionError, decompressed

MAX_FIELD_BYTES = 2 << 20  # defaults; a schema file can set its own (limits:)
MAX_RECORD_BYTES = 4 << 20
_LF, _CR, _QUOTE, _NUL = 10, 13, 34, 0


class CsvFormatError(ValueError):
    """The file as a whole cannot be read as the expected CSV; retrying will not help."""

    transient = False


# ---------------------------------------------------------------- schema


TYPES = ("text", "integer", "numeric", "date", "timestamp", "boolean")
CASES = ("lower", "upper")
_COLUMN_KEYS = {
    "name",
    "source",
    "type",
    "required",
    "sensitive",
    "min",
    "trim",
    "collapse_whitespace",
    "case",
    "missing_to_null",
}
_BOOLEANS = ["true", "t", "yes", "y", "1", "false", "f", "no", "n", "0"]
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a CSV contract. `type`, `required` and `min` are checked, never applied: the
    text lands as it arrived. `trim`, `collapse_whitespace`, `case` and `missing_to_null` are the
    declared changes to the landed value, applied in that order."""

    name: str
    source: str
    type: str = "text"
    required: bool = False
    sensitive: bool = False
    min: Decimal | None = None
    trim: bool = False
    collapse_whitespace: bool = False
    case: str | None = None
    missing_to_null: bool = False


@dataclass(frozen=True)
class CsvSchema:
    table: str
    quarantine_table: str
    columns: tuple[ColumnSpec, ...]
    missing: tuple[str, ...] = ("",)
    delimiter: str = ","
    max_field_bytes: int = MAX_FIELD_BYTES
    max_record_bytes: int = MAX_RECORD_BYTES

    @classmethod
    def from_yaml(cls, path: Path) -> CsvSchema:
        doc = yaml.safe_load(Path(path).read_text())
        columns = []
        for spec in doc["columns"]:
            unknown = set(spec) - _COLUMN_KEYS
            if unknown:
                raise ValueError(f"{path}: column {spec.get('name')!r} has unknown keys {sorted(unknown)}")
            if spec.get("type", "text") not in TYPES:
                raise ValueError(
                    f"{path}: column {spec['name']!r} has unknown type {spec['type']!r}; use one of {TYPES}"
                )
            if spec.get("case") not in (None, *CASES):
                raise ValueError(
                    f"{path}: column {spec['name']!r} has unknown case {spec['case']!r}; use one of {CASES}"
                )
            columns.append(
                ColumnSpec(
                    name=spec["name"],
                    source=spec.get("source", spec["name"]),
                    type=spec.get("type", "text"),
                    required=bool(spec.get("required", False)),
                    sensitive=bool(spec.get("sensitive", False)),
                    min=Decimal(str(spec["min"])) if spec.get("min") is not None else None,
                    trim=bool(spec.get("trim", False)),
                    collapse_whitespace=bool(spec.get("collapse_whitespace", False)),
                    case=spec.get("case"),
                    missing_to_null=bool(spec.get("missing_to_null", False)),
                )
            )
        limits = doc.get("limits", {})
        return cls(
            table=doc["table"],
            quarantine_table=doc["quarantine_table"],
            columns=tuple(columns),
            missing=tuple(doc.get("missing", [""])),
            delimiter=doc.get("delimiter", ","),
            max_field_bytes=int(limits.get("max_field_bytes", MAX_FIELD_BYTES)),
            max_record_bytes=int(limits.get("max_record_bytes", MAX_RECORD_BYTES)),
        )

    @property
    def sensitive_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.sensitive]

    def bind(self, header: list[str]) -> list[int | None]:
        """The header position of each schema column (None: optional and absent); raises
        CsvFormatError when a required column is missing or a column the schema reads is repeated.
        Names match trimmed, case-insensitively, runs of spaces as one underscore."""
        names = [_normalize_name(h) for h in header]
        positions: list[int | None] = []
        for column in self.columns:
            source = _normalize_name(column.source)
            found = [i for i, n in enumerate(names) if n == source]
            if len(found) > 1:
                raise CsvFormatError(
                    f"the header repeats column {column.source!r} (positions "
                    f"{', '.join(str(i + 1) for i in found)}): which one is meant?"
                )
            positions.append(found[0] if found else None)
        missing = [c.source for c, p in zip(self.columns, positions) if c.required and p is None]
        if missing:
            shown = ", ".join(h.strip()[:40] for h in header[:12])
            raise CsvFormatError(
                f"the header lacks required column(s) {', '.join(missing)} (found: {shown or 'nothing'}); "
                "is this the right kind of file?"
            )
        return positions


def _normalize_name(name: str) -> str:
    return _SPACES.sub("_", name.strip().lower())


# ---------------------------------------------------------------- reading a stream


@dataclass(frozen=True)
class Rejected:
    """A record that does not load: its first line, its bytes exactly as in the file, and why."""

    line: int
    raw: bytes
    reason: str


class CsvReader:
    """One CSV byte stream under a schema. Use once.

    `batches(chunks)` yields Arrow record batches: one text column per schema column (declared
    rules applied) and `source_line`; every rejected record goes to `on_reject`. Counts:
    `records` (data records, header and blank lines excluded) = `rows` + `rejected`.
    """

    def __init__(self, schema: CsvSchema, on_reject: Callable[[Rejected], None]):
        self.schema = schema
        self.on_reject = on_reject
        self.header: list[str] | None = None
        self.records = self.rows = self.rejected = 0
        self._positions: list[int | None] = []
        self._validator: _Validator | None = None

    def batches(self, chunks: Iterable[bytes]) -> Iterator[pa.RecordBatch]:
        framer = _Framer(self.schema.delimiter, self.schema.max_record_bytes)
        for block in framer.blocks(chunks):
            if self.header is None:
                bad = min(block.rejected, key=lambda r: r.line, default=None)
                if bad is not None and (block.count == 0 or bad.line < block.lines[0]):
                    raise CsvFormatError(f"line {bad.line}: the header cannot be read: {bad.reason}")
                if block.count == 0:
                    continue
                block = self._take_header(block)
            for rejected in block.rejected:
                self._reject(rejected)
            if block.count:
                batch = self._parse(block)
                self.rows += batch.num_rows
                if batch.num_rows:
                    yield batch

    def _reject(self, rejected: Rejected) -> None:
        self.records += 1
        self.rejected += 1
        self.on_reject(rejected)

    def _take_header(self, block: _Block) -> _Block:
        text = block.raw(0).decode("utf-8")
        try:
            self.header = next(csv.reader([text], delimiter=self.schema.delimiter, strict=True))
        except csv.Error as exc:
            raise CsvFormatError(f"line {block.lines[0]}: the header is not valid CSV ({exc})") from None
        try:
            self._positions = self.schema.bind(self.header)
        except CsvFormatError as exc:
            raise CsvFormatError(f"line {block.lines[0]}: {exc}") from None
        self._validator = _Validator(self.schema, self._positions)
        return block.drop_first()

    def _parse(self, block: _Block) -> pa.RecordBatch:
        width = len(self.header)
        names = [f"f{i}" for i in range(width)]
        wanted = sorted({p for p in self._positions if p is not None})
        invalid: list[tuple[int, int]] = []  # (record index in block, fields found)

        def on_invalid(row) -> str:
            invalid.append((row.number - 1, row.actual_columns))
            return "skip"

        data = block.data
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            read_options=pa_csv.ReadOptions(
                column_names=names, use_threads=False, block_size=max(len(data) + 1, 1 << 16)
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=self.schema.delimiter,
                quote_char='"',
                double_quote=True,
                escape_char=False,
                newlines_in_values=True,
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                include_columns=[names[p] for p in wanted] or names[:1],
                strings_can_be_null=False,
                check_utf8=False,
            ),
        )
        self.records += block.count
        if table.num_rows + len(invalid) != block.count:  # framing and parser disagree: never guess
            raise CsvFormatError(
                f"line {block.lines[0]}: the CSV parser found {table.num_rows + len(invalid):,} "
                f"records where {block.count:,} were framed"
            )
        keep = np.ones(block.count, dtype=bool)
        for index, found in invalid:
            keep[index] = False
            self._reject_record(block, index, f"expected {width} fields, found {found}")
        lines = block.lines[keep]
        kept = np.flatnonzero(keep)
        columns = [table.column(names[p]).combine_chunks() if p is not None else None for p in self._positions]
        longest = int((block.ends - block.starts).max())  # no field is longer than its record
        values, problems = self._validator.check(columns, table.num_rows, longest)
        for row, reason in problems:
            self._reject_record(block, int(kept[row]), reason)
        if problems:
            ok = np.ones(table.num_rows, dtype=bool)
            ok[[row for row, _ in problems]] = False
            mask = pa.array(ok)
            values = [v.filter(mask) for v in values]
            lines = lines[ok]
        return pa.RecordBatch.from_arrays(
            [*values, pa.array(lines, pa.int64())], names=[*(c.name for c in self.schema.columns), "source_line"]
        )

    def _reject_record(self, block: _Block, index: int, reason: str) -> None:
        self.rejected += 1
        self.on_reject(Rejected(int(block.lines[index]), block.raw(index), reason))


def count_records(chunks: Iterable[bytes], delimiter: str = ",", max_record_bytes: int = MAX_RECORD_BYTES) -> int:
    """Non-blank records after the header, framed exactly as `CsvReader` frames them: what rows
    loaded + rows rejected must add up to."""
    total = 0
    for block in _Framer(delimiter, max_record_bytes).blocks(chunks):
        total += block.count + len(block.rejected)
    return max(total - 1, 0)


# ---------------------------------------------------------------- validation and declared rules


class _Validator:
    """Checks whole columns of one schema; returns the values to land and (row, reason) problems."""

    def __init__(self, schema: CsvSchema, positions: list[int | None]):
        self.schema = schema
        self.positions = positions
        self.missing = pa.array(sorted(set(schema.missing) | {""}), pa.string())

    def check(
        self, columns: list[pa.Array | None], rows: int, longest: int | None = None
    ) -> tuple[list[pa.Array], list[tuple[int, str]]]:
        """`longest`: the longest record's bytes, when known; no field of a batch whose records
        are all within max_field_bytes needs measuring."""
        reasons: dict[int, list[str]] = {}
        values = []
        for spec, column in zip(self.schema.columns, columns):
            if column is None:  # an optional column the file does not have
                values.append(pa.nulls(rows, pa.string()))
                continue
            if longest is None or longest > self.schema.max_field_bytes:
                too_long = pc.greater(pc.binary_length(column), self.schema.max_field_bytes)
                for row in _rows(too_long):
                    reasons.setdefault(row, []).append(
                        f"{spec.name}: {len(column[row].as_py().encode()):,} bytes, longer than max_field_bytes "
                        f"({self.schema.max_field_bytes:,})"
                    )
            value = _apply_rules(spec, column, self.missing)
            values.append(value)
            if not spec.required and spec.type == "text":
                continue  # nothing to check
            trimmed = pc.utf8_trim_whitespace(value)
            absent = pc.or_kleene(pc.is_null(value), pc.is_in(trimmed, value_set=self.missing))
            if spec.required:
                for row in _rows(absent):
                    reasons.setdefault(row, []).append(f"{spec.name}: missing required value")
            if spec.type != "text":
                bad = pc.and_(pc.invert(absent), pc.invert(_valid(spec, trimmed)))
                for row in _rows(bad):
                    shown = "invalid value" if spec.sensitive else _why(spec, trimmed[row].as_py())
                    reasons.setdefault(row, []).append(f"{spec.name}: {shown}")
        return values, sorted((row, "; ".join(r)) for row, r in reasons.items())


def _apply_rules(spec: ColumnSpec, column: pa.Array, missing: pa.Array) -> pa.Array:
    if spec.trim:
        column = pc.utf8_trim_whitespace(column)
    if spec.collapse_whitespace:
        column = pc.replace_substring_regex(column, pattern=r"[\s\p{Z}]+", replacement=" ")
    if spec.case == "lower":
        column = pc.utf8_lower(column)
    elif spec.case == "upper":
        column = pc.utf8_upper(column)
    if spec.missing_to_null:
        column = pc.if_else(
            pc.is_in(pc.utf8_trim_whitespace(column), value_set=missing), pa.scalar(None, pa.string()), column
        )
    return column


_INTEGER = r"^[+-]?[0-9]{1,18}$"
_NUMERIC = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"


def _valid(spec: ColumnSpec, text: pa.Array) -> pa.Array:
    """Which values PostgreSQL will cast to the column's type in silver (whitespace around allowed)."""
    kind = spec.type
    if kind in ("integer", "numeric"):
        # Plain digits (and one decimal point) need no regular expression; the rest are matched.
        ok = pc.match_substring_regex(text, _INTEGER if kind == "integer" else _NUMERIC)
        if spec.min is not None:
            numbers = pc.cast(pc.if_else(ok, text, pa.scalar("0")), pa.float64())
            ok = pc.and_(ok, pc.greater_equal(numbers, float(spec.min)))
        return ok
    if kind == "boolean":
        return pc.is_in(pc.utf8_lower(text), value_set=pa.array(_BOOLEANS))
    # date, timestamp: the day must print back as it was written (2026-02-30 does not)
    day = pc.utf8_slice_codeunits(text, 0, 10)
    parsed = pc.strptime(day, format="%Y-%m-%d", unit="s", error_is_null=True)
    ok = pc.equal(pc.cast(pc.cast(parsed, pa.date32()), pa.string()), day)  # (cast, not the slow strftime)
    if kind == "date":
        ok = pc.and_(ok, pc.equal(pc.binary_length(text), 10))
    else:
        ok = pc.and_(ok, pc.match_substring_regex(text, _TIMESTAMP))
    return pc.fill_null(ok, False)


def _why(spec: ColumnSpec, value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    if spec.type == "integer" and re.match(r"^[+-]?[0-9]+$", value) and not re.match(_INTEGER, value):
        return f"{shown!r} is out of range (at most 18 digits)"
    if spec.type in ("integer", "numeric") and re.match(_INTEGER if spec.type == "integer" else _NUMERIC, value):
        return f"{shown} is below the minimum {spec.min}"
    return {
        "integer": f"{shown!r} is not an integer",
        "numeric": f"{shown!r} is not a number",
        "date": f"{shown!r} is not a date (YYYY-MM-DD)",
        "timestamp": f"{shown!r} is not an ISO timestamp",
        "boolean": f"{shown!r} is not a boolean",
    }[spec.type]


def _rows(mask: pa.Array) -> list[int]:
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist() if pc.any(mask).as_py() else []


# ---------------------------------------------------------------- framing


@dataclass
class _Block:
    """Complete, well-formed records: `data` holds them back to back (line ends included)."""

    data: bytes
    starts: np.ndarray  # offset of each record in data
    ends: np.ndarray  # offset after each record's line end
    lines: np.ndarray  # first physical line of each record
    rejected: list[Rejected]

    @property
    def count(self) -> int:
        return len(self.starts)

    def raw(self, index: int) -> bytes:
        return self.data[self.starts[index] : self.ends[index]]

    def drop_first(self) -> _Block:
        cut = int(self.ends[0])
        return _Block(self.data[cut:], self.starts[1:] - cut, self.ends[1:] - cut, self.lines[1:], self.rejected)


class _Framer:
    """Splits a byte stream into records (see the module docstring), a chunk at a time."""

    def __init__(self, delimiter: str, max_record_bytes: int):
        if len(delimiter.encode()) != 1:
            raise ValueError(f"the delimiter must be one byte, got {delimiter!r}")
        self.delim = delimiter.encode()[0]
        self.limit = max_record_bytes
        self.line = 1  # physical line where the pending bytes start

    def blocks(self, chunks: Iterable[bytes]) -> Iterator[_Block]:
        pending = b""
        oversized: _Oversized | None = None
        for chunk in _decoded(chunks):
            if oversized is not None:
                chunk, done = oversized.feed(chunk)
                if not done:
                    continue
                yield _Block(b"", *_EMPTY, [oversized.rejected(closed=True)])
                self.line = oversized.end_line
                oversized = None
            buffer = pending + chunk if pending else chunk
            block, consumed = self._frame(buffer, final=False)
            pending = buffer[consumed:]
            if block is not None:
                yield block
            if len(pending) > self.limit:
                oversized = _Oversized(pending, self.line, self.limit)
                pending = b""
        if oversized is not None:
            yield _Block(b"", *_EMPTY, [oversized.rejected(closed=False)])
        elif pending:
            block, _ = self._frame(pending, final=True)
            if block is not None:
                yield block

    def _frame(self, buffer: bytes, final: bool) -> tuple[_Block | None, int]:
        """Frame the complete records at the start of `buffer`; returns them and the bytes used."""
        arr = np.frombuffer(buffer, dtype=np.uint8)
        n = len(arr)
        quotes = np.flatnonzero(arr == _QUOTE)
        breaks = _line_breaks(arr, final)  # offset of the last byte of each line end
        stray = _stray_quotes(arr, quotes, self.delim)
        if stray is not None:  # a quote that opens nothing: literal for framing, the record is bad
            quotes = np.setdiff1d(quotes, stray, assume_unique=True)
        else:
            stray = np.empty(0, dtype=np.int64)
        outside = (np.searchsorted(quotes, breaks) & 1) == 0
        ends = breaks[outside] + 1  # offset after each complete record
        starts = np.concatenate(([0], ends[:-1])).astype(np.int64) if len(ends) else ends
        consumed = int(ends[-1]) if len(ends) else 0
        if final and consumed < n:  # the last record has no line end
            if len(quotes) and (np.searchsorted(quotes, n) - np.searchsorted(quotes, consumed)) % 2:
                rejected = [
                    Rejected(
                        self.line + int(np.searchsorted(breaks, consumed)),
                        buffer[consumed:],
                        "a quoted field is never closed: the record runs to the end of the file",
                    )
                ]
                block = self._block(buffer[:consumed], starts, ends, breaks, arr, quotes, stray)
                block.rejected += rejected
                return block, n
            starts = np.append(starts, consumed)
            ends = np.append(ends, n)
            consumed = n
        if not len(starts):
            return None, 0
        block = self._block(buffer, starts, ends, breaks, arr, quotes, stray)
        self.line += int(np.searchsorted(breaks, consumed))
        return block, consumed

    def _block(self, buffer, starts, ends, breaks, arr, quotes, stray) -> _Block:
        if not len(starts):
            return _Block(b"", *_EMPTY, [])
        line0 = self.line
        lines = line0 + np.searchsorted(breaks, starts)
        content_end = ends.copy()  # without the line end
        has_break = np.ones(len(ends), dtype=bool)  # every record but an unterminated last one
        has_break[-1] = len(breaks) > 0 and breaks[-1] == ends[-1] - 1
        content_end[has_break] -= 1
        last = len(arr) - 1
        crlf = (
            has_break
            & (content_end > starts)
            & (arr[np.maximum(content_end - 1, 0)] == _CR)
            & (arr[np.minimum(ends - 1, last)] == _LF)
        )
        content_end[crlf] -= 1
        problems: dict[int, str] = {}
        for index in np.flatnonzero(content_end - starts > self.limit).tolist():
            problems[index] = (
                f"the record is {int(content_end[index] - starts[index]):,} bytes, longer than "
                f"max_record_bytes ({self.limit:,})"
            )
        record_of = lambda offsets: np.searchsorted(ends, offsets, side="right")  # noqa: E731
        stray = stray[stray < ends[-1]]  # the pending tail is framed again with the next chunk
        for offset, index in zip(stray.tolist(), record_of(stray).tolist()):
            problems.setdefault(
                index,
                f"malformed CSV: a quote at byte {offset - int(starts[index]) + 1} of the "
                "record neither opens nor closes a quoted field",
            )
        closing = quotes[1::2]
        closing = closing[closing < ends[-1]]
        follow = arr[np.minimum(closing + 1, len(arr) - 1)]
        bad_close = closing[(closing + 1 < len(arr)) & ~np.isin(follow, [self.delim, _LF, _CR, _QUOTE])]
        for offset, index in zip(bad_close.tolist(), record_of(bad_close).tolist()):
            problems.setdefault(
                index,
                f"malformed CSV: a quoted field is followed by other characters at byte "
                f"{offset - int(starts[index]) + 2} of the record",
            )
        nul = np.flatnonzero(arr[: int(ends[-1])] == _NUL)
        for index in record_of(nul).tolist():
            problems.setdefault(index, "contains a NUL byte, which PostgreSQL text cannot hold")
        data = memoryview(buffer)[: int(ends[-1])]
        bad_byte = _first_non_utf8(data)
        if bad_byte is not None:
            first = int(record_of(np.array([bad_byte]))[0])
            for index in range(first, len(starts)):
                try:
                    codecs.utf_8_decode(data[starts[index] : ends[index]], "strict", True)
                except UnicodeDecodeError as bad:
                    problems.setdefault(
                        index,
                        f"not UTF-8 text: byte 0x{bytes(data[starts[index] + bad.start :][:1]).hex()}"
                        f" at byte {bad.start + 1} of the record",
                    )
        blank = content_end == starts
        drop = blank.copy()
        drop[list(problems)] = True
        rejected = [Rejected(int(lines[i]), bytes(data[starts[i] : ends[i]]), problems[i]) for i in sorted(problems)]
        if not drop.any():
            return _Block(bytes(data), starts, ends, lines, rejected)
        keep = ~drop
        pieces = [bytes(data[s:e]) for s, e in zip(starts[keep].tolist(), ends[keep].tolist())]
        sizes = np.array([len(p) for p in pieces], dtype=np.int64)
        new_ends = np.cumsum(sizes)
        return _Block(b"".join(pieces), new_ends - sizes, new_ends, lines[keep], rejected)


_EMPTY = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))


def _first_non_utf8(data: memoryview) -> int | None:
    """Offset of the first byte of `data` that is not UTF-8, None when it all is. Arrow's check
    (SIMD, ~10x Python's decoder) answers; Python's strict decoder only locates a bad byte."""
    whole = pa.Array.from_buffers(
        pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int64)), pa.py_buffer(data)]
    )
    try:
        whole.cast(pa.large_string())
        return None
    except pa.ArrowInvalid:
        try:
            codecs.utf_8_decode(data, "strict", True)
        except UnicodeDecodeError as exc:
            return exc.start
        return None  # the two checks disagree: Python's decoder decides


def _line_breaks(arr: np.ndarray, final: bool) -> np.ndarray:
    """Offsets of the last byte of each line end: LF (also of CRLF) and lone CR. A CR as the very
    last byte of a chunk waits for the next chunk (it may be the first half of CRLF)."""
    lf = np.flatnonzero(arr == _LF)
    cr = np.flatnonzero(arr == _CR)
    if len(cr):
        nxt = np.minimum(cr + 1, len(arr) - 1)
        lone = (cr + 1 < len(arr)) & (arr[nxt] != _LF)
        if final and cr[-1] == len(arr) - 1:
            lone[-1] = True
        cr = cr[lone]
        if len(cr):
            return np.sort(np.concatenate((lf, cr)))
    return lf


def _stray_quotes(arr: np.ndarray, quotes: np.ndarray, delim: int) -> np.ndarray | None:
    """None when every quote opens a field, closes it or is doubled inside it (quote parity then
    frames the records); otherwise the quotes that are literal characters, found by walking them."""
    opening = quotes[0::2]
    prev = arr[np.maximum(opening - 1, 0)]
    fine = (opening == 0) | np.isin(prev, [delim, _LF, _CR, _QUOTE])
    if fine.all():
        return None
    positions = quotes.tolist()
    view = memoryview(arr)
    stray = []
    inside = False
    i = 0
    while i < len(positions):
        p = positions[i]
        if not inside:
            if p == 0 or view[p - 1] in (delim, _LF, _CR):
                inside = True
            else:
                stray.append(p)
            i += 1
        elif i + 1 < len(positions) and positions[i + 1] == p + 1:
            i += 2  # a doubled quote inside a quoted field
        else:
            inside = False
            i += 1
    return np.array(stray, dtype=np.int64)


class _Oversized:
    """A record longer than the limit: keep its first `limit` bytes, skip to its end by quote parity."""

    def __init__(self, head: bytes, line: int, limit: int):
        self.head = head[:limit]
        self.line = line
        self.limit = limit
        arr = np.frombuffer(head, dtype=np.uint8)
        self.quotes = int(np.count_nonzero(arr == _QUOTE))
        self.end_line = line + len(_line_breaks(arr, final=False))
        self.last_cr = head.endswith(b"\r")

    def feed(self, chunk: bytes) -> tuple[bytes, bool]:
        """Consume `chunk` up to the record's end; returns (the rest, whether the end was found)."""
        arr = np.frombuffer(chunk, dtype=np.uint8)
        if self.last_cr and arr[0] != _LF:  # the previous chunk ended with a lone CR: a line end
            self.end_line += 1
            if self.quotes % 2 == 0:
                return chunk, True
        self.last_cr = False
        quotes = np.flatnonzero(arr == _QUOTE)
        breaks = _line_breaks(arr, final=False)
        outside = ((np.searchsorted(quotes, breaks) + self.quotes) & 1) == 0
        if outside.any():
            end = int(breaks[outside][0]) + 1
            self.end_line += int(np.searchsorted(breaks, end))
            return chunk[end:], True
        self.quotes += len(quotes)
        self.end_line += len(breaks)
        self.last_cr = chunk.endswith(b"\r")
        return b"", False

    def rejected(self, closed: bool) -> Rejected:
        reason = (
            f"the record is longer than max_record_bytes ({self.limit:,})"
            if closed or self.quotes % 2 == 0
            else "a quoted field is never closed: the record runs to the end of the file"
        )
        return Rejected(self.line, self.head, f"{reason}; raw record cut to its first {self.limit:,} bytes")


# ---------------------------------------------------------------- what the bytes are


_SIGNATURES = [
    (codecs.BOM_UTF32_LE, "UTF-32 text (it starts with a UTF-32 byte-order mark); export it as UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16 text (it starts with a UTF-16 byte-order mark); export it as UTF-8"),
    (codecs.BOM_UTF16_BE, "UTF-16 text (it starts with a UTF-16 byte-order mark); export it as UTF-8"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one), not CSV text"),
    (b"%PDF", "a PDF document, not CSV text"),
    (b"\xfd7zXZ\x00", "an xz archive; gzip, bzip2 and zstd are read directly"),
]


def _decoded(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The text bytes of the stream: decompressed (`dw_platform.lib.compression`), a UTF-8 BOM
    dropped, other known non-text formats refused by name."""
    try:
        iterator = iter(decompressed(chunks))
        head = b""
        for chunk in iterator:
            head += chunk
            if len(head) >= 8:
                break
        if not head:
            return
        for signature, what in _SIGNATURES:
            if head.startswith(signature):
                raise CsvFormatError(f"the file is {what}")
        if len(head) >= 4 and (head[1] == 0 == head[3] or head[0] == 0 == head[2]):
            raise CsvFormatError(
                "the file looks like UTF-16 text without a byte-order mark (every other byte is NUL); export it as UTF-8"
            )
        first = True
        for chunk in itertools.chain([head], iterator):
            if first:
                if chunk.startswith(codecs.BOM_UTF8):
                    chunk = chunk[len(codecs.BOM_UTF8) :]
                first = not chunk  # a chunk too short to hold the whole BOM is not expected
            if chunk:
                yield chunk
    except CompressionError as exc:
        raise CsvFormatError(str(exc)) from None


__all__ = ["CsvFormatError", "CsvReader", "CsvSchema", "ColumnSpec", "Rejected", "count_records"]
