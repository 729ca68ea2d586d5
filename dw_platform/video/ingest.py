"""The video domain's files into bronze rows: CSV (users, viewing sessions) and content JSON.

CSV files stream through the shared reader (`dw_platform.lib.csv_stream`) under the schema files
beside this module: values land as they arrived, as text. Records without their key, with the
wrong number of fields or otherwise unreadable go to `bronze.video_quarantine` with the line,
their exact bytes (`raw_bytes`), a readable rendering (`raw`) and the reason, inside the load's
transaction.

Content JSON (a JSON array of documents, or one document per line) is flattened
(`dw_platform.lib.json_flatten`): `bronze.content` gets one row per document, each array a
child table `bronze.content_<field>` keyed by `content_id` and `position`. A field never seen
before becomes a new column, recorded in `bronze.video_schema_changes`. Malformed documents are
quarantined with the reason (not JSON, not UTF-8, a control character, a `\\u0000` or an unpaired
surrogate PostgreSQL cannot store, a value that breaks its column's type). Content files are read
whole: a catalog's metadata is small. A JSON array whose syntax breaks cannot be split into
documents: the file fails, naming the line.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pyarrow as pa
from psycopg import sql

from dw_platform.defs.video.partitions import FAILED, landed_path
from dw_platform.lib.bronze import BronzeTable, Column, ExpressionIndex, ensure_bronze_objects
from dw_platform.lib.compression import FORMATS, decompressed
from dw_platform.lib.csv_stream import CsvReader, CsvSchema
from dw_platform.lib.json_flatten import DocumentError, TableShape, flatten
from dw_platform.lib.landing import LandedFile, Landing
from dw_platform.lib.quarantine import readable

HERE = Path(__file__).parent
USERS_SCHEMA = CsvSchema.from_yaml(HERE / "users.yaml")
SESSIONS_SCHEMA = CsvSchema.from_yaml(HERE / "viewing_sessions.yaml")

QUARANTINE = "bronze.video_quarantine"


def key_index(column: str) -> ExpressionIndex:
    """Silver keeps the latest row per trimmed key, and a run rebuilds the keys its days touched
    from every day's rows of them: looked up by `btrim(key)`."""
    return ExpressionIndex(f"{column}_key", f"btrim({column})")


# The catalog is sent whole every day: silver looks up a content item's latest day before (or
# after) the run's window, and that day's rows, not every day's (dbt_project/models/silver/video).
CONTENT_KEY_DAY = ExpressionIndex("content_id_key_day", "btrim(content_id)", ("arrival_date",))


def csv_table(schema: CsvSchema, key: str) -> BronzeTable:
    table_schema, name = schema.table.split(".")
    columns = (
        *(Column(c.name, "text") for c in schema.columns),
        Column("arrival_date", "date"),
        Column("source_line", "bigint"),
    )
    return BronzeTable(
        table_schema, name, columns, index_columns=("arrival_date",), expression_indexes=(key_index(key),)
    )


USERS = csv_table(USERS_SCHEMA, "user_id")
SESSIONS = csv_table(SESSIONS_SCHEMA, "session_id")


def day_file(zone: Landing, day: str, file_name: str) -> LandedFile | None:
    """A day's file as it landed: `<day>/<file_name>`, or compressed (`users.csv.gz`, `.bz2`,
    `.zst`); else (a re-run after it failed) its copy in failed/. Raises ValueError when more than
    one of them landed."""
    for folder in ("", FAILED):
        paths = [folder + landed_path(day, file_name + suffix) for suffix in ("", *FORMATS)]
        found = [f for path in paths if (f := zone.find(path)) is not None]
        if len(found) > 1:
            raise ValueError(
                f"{' and '.join(f.path for f in found)} both landed: which one is meant? Remove the other."
            )
        if found:
            return found[0]
    return None


def arrived_uri(file: LandedFile) -> str:
    """Where a day's file arrived (its lineage), also while it lies in failed/."""
    return LandedFile(file.path.removeprefix(FAILED), "", 0, file.location).uri


def day_chunks(zone: Landing, file: LandedFile) -> Iterator[bytes]:
    """A landed file's bytes, decompressed when it is compressed (it must be what its name says)."""
    return decompressed(zone.chunks(file), file.path)


@dataclass
class Quarantine:
    """Rejected records of one file, written inside the load's transaction (replacing the file's)."""

    source_file: str
    arrival_date: date
    rows: list[tuple[int, bytes, str]] = field(default_factory=list)  # (line, exact bytes, reason)

    def add(self, line: int, raw: bytes, reason: str) -> None:
        self.rows.append((line, raw, reason))

    def write(self, conn: psycopg.Connection, batch_id: UUID, load_ts: datetime) -> None:
        conn.execute("delete from bronze.video_quarantine where source_file = %s", (self.source_file,))
        with conn.cursor().copy(
            "copy bronze.video_quarantine (source_file, arrival_date, line_number, raw, raw_bytes, reason,"
            " _bronze_load_ts, _bronze_batch_id) from stdin"
        ) as copy:
            for line, raw, reason in self.rows:
                copy.write_row(
                    (self.source_file, self.arrival_date, line, readable(raw), raw, reason, load_ts, batch_id)
                )


class CsvFile:
    """The parse of one landed CSV file under a schema (`csv_stream.CsvReader`); counts what it saw.
    Use once."""

    def __init__(self, source_file: str, arrival_date: date, schema: CsvSchema):
        self.arrival_date = arrival_date
        self.quarantine = Quarantine(source_file, arrival_date)
        self.reader = CsvReader(schema, lambda r: self.quarantine.add(r.line, r.raw, r.reason))

    @property
    def data_lines(self) -> int:
        return self.reader.records

    @property
    def rows_loaded(self) -> int:
        return self.reader.rows

    def batches(self, chunks: Iterable[bytes]) -> Iterator[pa.RecordBatch]:
        for batch in self.reader.batches(chunks):
            yield batch.append_column("arrival_date", pa.array([self.arrival_date] * batch.num_rows, pa.date32()))

    def write_quarantine(self, conn: psycopg.Connection, batch_id: UUID, load_ts: datetime) -> None:
        self.quarantine.write(conn, batch_id, load_ts)


# ------------------------------------------------------------------------------ content JSON

CONTENT_KEY = "content_id"
CONTENT_BASE = (Column(CONTENT_KEY, "text"), Column("arrival_date", "date"), Column("source_line", "bigint"))
CHILD_BASE = (Column(CONTENT_KEY, "text"), Column("position", "integer"), Column("arrival_date", "date"))
CONTENT_RAW = BronzeTable(
    "bronze",
    "content_raw",
    (
        Column(CONTENT_KEY, "text"),
        Column("arrival_date", "date"),
        Column("source_line", "bigint"),
        Column("document", "jsonb"),
    ),
    index_columns=("arrival_date",),
)
PARENT = "content"


def child_table_name(array_field: str) -> str:
    return f"{PARENT}_{array_field}"[:63]


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DECODER = json.JSONDecoder(strict=False)  # raw control characters are named by _problem instead


def documents(data: bytes) -> Iterator[tuple[int, bytes, Any, str | None]]:
    """(line, exact bytes, parsed document, None) for each document of a JSON array or JSON Lines
    file, or (line, exact bytes, None, the reason) for one that cannot be loaded. A JSON array
    whose syntax breaks raises DocumentError naming the line."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    text = data.decode("utf-8", "surrogateescape")  # bytes that are not UTF-8 come back exactly, and are named
    if text.lstrip().startswith("["):
        yield from _array_documents(text)
        return
    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if _WHITESPACE.fullmatch(line):  # blank: nothing but JSON's whitespace
            continue
        try:
            doc = _DECODER.decode(line)
        except json.JSONDecodeError as exc:
            yield line_no, _bytes(line), None, f"malformed JSON: {exc.msg} at column {exc.colno}"
            continue
        yield line_no, _bytes(line), doc, _problem(line, doc)


def _array_documents(text: str) -> Iterator[tuple[int, bytes, Any, str | None]]:
    """The elements of a JSON array, each with the line it starts on and its own bytes."""
    pos = _WHITESPACE.match(text, text.index("[") + 1).end()
    line, counted = 1, 0
    if text.startswith("]", pos):
        return _array_end(text, pos + 1)
    while True:
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            doc, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"line {exc.lineno}: not a JSON array: {exc.msg} at column {exc.colno}") from None
        element = text[pos:end]
        yield line, _bytes(element), doc, _problem(element, doc)
        pos = _WHITESPACE.match(text, end).end()
        if text.startswith(",", pos):
            pos = _WHITESPACE.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            return _array_end(text, pos + 1)
        else:
            at = text.count("\n", 0, pos) + 1
            raise DocumentError(f"line {at}: not a JSON array: expected ',' or ']' after a document")


def _array_end(text: str, pos: int) -> None:
    if text[pos:].strip():
        raise DocumentError(f"line {text.count(chr(10), 0, pos) + 1}: not a JSON array: text after its closing ']'")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, as surrogateescape keeps it
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def _problem(text: str, doc: Any) -> str | None:
    """Why a document that parsed cannot be stored, or None: bytes that are not UTF-8, a raw
    control character, or a `\\u0000` or unpaired surrogate escape, which PostgreSQL text and
    JSONB cannot hold."""
    if (bad := _NOT_UTF8.search(text)) is not None:
        at = len(_bytes(text[: bad.start()])) + 1
        return f"not UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x} at byte {at} of the document)"
    if (control := _CONTROL.search(text)) is not None:
        return f"control character 0x{ord(control.group()):02x} (JSON requires it escaped)"
    if any(_NOT_TEXT.search(s) for s in _strings(doc)):
        return "a \\u0000 (NUL) or unpaired surrogate escape: PostgreSQL cannot store it"
    return None


def _strings(value: Any) -> Iterator[str]:
    """Every string of a parsed document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@dataclass
class ContentFile:
    """One content file flattened against the tables' current shapes. Use once."""

    source_file: str
    arrival_date: date
    parent: TableShape
    children: dict[str, TableShape]
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, values)
    child_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    raw: list[tuple[int, str, dict]] = field(default_factory=list)
    added: list[tuple[str, str, str]] = field(default_factory=list)  # (table, column, type)
    new_tables: list[str] = field(default_factory=list)
    quarantine: Quarantine | None = None

    def __post_init__(self):
        self.quarantine = Quarantine(self.source_file, self.arrival_date)

    def parse(self, data: bytes) -> None:
        seen_ids: set[str] = set()
        for line, raw, doc, error in documents(data):
            try:
                if error:
                    raise DocumentError(error)
                self._accept(line, raw, doc, seen_ids)
            except DocumentError as exc:
                self.quarantine.add(line, raw, str(exc))

    def _accept(self, line: int, raw: bytes, doc: Any, seen_ids: set[str]) -> None:
        if not isinstance(doc, dict):
            raise DocumentError(f"a document must be a JSON object, found {type(doc).__name__}")
        key = doc.get(CONTENT_KEY)
        if key is None or (isinstance(key, str) and not key.strip()) or isinstance(key, (bool, dict, list)):
            raise DocumentError(f"{CONTENT_KEY}: missing required value")
        key = str(key).strip()
        if key in seen_ids:
            raise DocumentError(f"{CONTENT_KEY}: {key!r} appears twice in the file")
        flat = flatten({k: v for k, v in doc.items() if k != CONTENT_KEY})
        for reserved in ("arrival_date", "source_line", "position"):
            flat.row.pop(reserved, None)
        for name, value in flat.row.items():
            if child_table_name(name) in self.children:
                shown = json.dumps(value)
                raise DocumentError(f"{name}: an array in earlier documents, now {shown[:40]}")
        for name in flat.children:
            if name in self.parent.columns:
                raise DocumentError(f"{name}: a single value in earlier documents, now an array")
        values, new = self.parent.plan(flat.row)
        child_plans: dict[str, tuple[list[dict], dict[str, str]]] = {}
        for array_field, elements in flat.children.items():
            name = child_table_name(array_field)
            shape = self.children.get(name) or TableShape()
            planned = TableShape(dict(shape.columns))
            rows = []
            for position, element in enumerate(elements, start=1):
                element.pop(CONTENT_KEY, None), element.pop("position", None), element.pop("arrival_date", None)
                element_values, element_new = planned.plan(element)
                planned.absorb(element_new)
                rows.append({CONTENT_KEY: key, "position": position, **element_values})
            child_plans[name] = (rows, {c: t for c, t in planned.columns.items() if c not in shape.columns})
        # The whole document fits: commit its shape changes and rows.
        seen_ids.add(key)
        self.parent.absorb(new)
        self.added += [(PARENT, c, t) for c, t in new.items()]
        for name, (rows, child_new) in child_plans.items():
            if name not in self.children:
                self.children[name] = TableShape()
                self.new_tables.append(name)
            self.children[name].absorb(child_new)
            self.added += [(name, c, t) for c, t in child_new.items()]
            self.child_rows.setdefault(name, []).extend(rows)
        self.rows.append((line, {CONTENT_KEY: key, **values}))
        self.raw.append((line, key, doc))

    # -- tables

    def parent_table(self) -> BronzeTable:
        return BronzeTable(
            "bronze",
            PARENT,
            (*CONTENT_BASE, *(Column(c, t) for c, t in self.parent.columns.items())),
            index_columns=("arrival_date",),
            expression_indexes=(CONTENT_KEY_DAY,),
        )

    def child_table(self, name: str) -> BronzeTable:
        return BronzeTable(
            "bronze",
            name,
            (*CHILD_BASE, *(Column(c, t) for c, t in self.children[name].columns.items())),
            index_columns=("arrival_date",),
            expression_indexes=(CONTENT_KEY_DAY,),
        )

    def parent_batches(self) -> Iterator[list[tuple]]:
        shape = self.parent
        yield [(values[CONTENT_KEY], self.arrival_date, line, *shape.as_tuple(values)) for line, values in self.rows]


def current_shape(conn: psycopg.Connection, table: str, base: tuple[Column, ...]) -> TableShape | None:
    """The flattened columns `bronze.<table>` has now (beyond base and lineage), or None if it does not exist."""
    fixed = {c.name for c in base} | {"_bronze_load_ts", "_bronze_batch_id", "_bronze_source_file"}
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns where table_schema = 'bronze'"
        " and table_name = %s order by ordinal_position",
        (table,),
    ).fetchall()
    if not rows:
        return None
    return TableShape({name: dtype for name, dtype in rows if name not in fixed})


def existing_child_tables(conn: psycopg.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'bronze' and table_name like 'content\\_%%'"
            " and table_name not in ('content_raw')"
        )
    ]


def apply_schema_changes(conn: psycopg.Connection, parsed: ContentFile) -> None:
    """Create new child tables and add new columns (recorded in bronze.video_schema_changes)."""

    ensure_bronze_objects(conn, parsed.parent_table())
    for name in parsed.children:
        ensure_bronze_objects(conn, parsed.child_table(name))
    if not parsed.added:
        return
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('dw_platform.bronze_ddl', 0))")
        for table, column, pg_type in parsed.added:
            conn.execute(
                sql.SQL("alter table {} add column if not exists {} {}").format(
                    sql.Identifier("bronze", table), sql.Identifier(column), sql.SQL(pg_type)
                )
            )
            conn.execute(
                "insert into bronze.video_schema_changes (table_name, column_name, pg_type, source_file)"
                " values (%s, %s, %s, %s) on conflict do nothing",
                (f"bronze.{table}", column, pg_type, parsed.source_file),
            )
