"""One sales CSV blob into bronze rows and quarantine rows, streaming, under the schema file.

`SalesFile.batches()` feeds `bronze.load` with Arrow batches: the values as they arrived (text,
only the schema's declared rules applied), sensitive columns Fernet-encrypted on every core, and
each row's line number. Records that do not load are spooled to a temporary file (memory-bounded:
line, encrypted raw bytes, reason) and written to the quarantine table by `write_quarantine`,
which `bronze.load` calls inside its transaction, so a file's rows and quarantine rows replace
their previous versions together.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from uuid import UUID

import psycopg
import pyarrow as pa
from psycopg import sql

from dw_platform.lib.bronze import BronzeTable, Column
from dw_platform.lib.crypto import Cipher
from dw_platform.lib.csv_stream import CsvFormatError, CsvReader, CsvSchema, Rejected, count_records
from dw_platform.lib.fernet_batch import encrypt_columns

SCHEMA = CsvSchema.from_yaml(Path(__file__).with_name("schema.yaml"))


def bronze_table(schema: CsvSchema = SCHEMA) -> BronzeTable:
    """Every source column is text (values as they arrived; silver types them), plus the line."""
    table_schema, name = schema.table.split(".")
    columns = tuple(Column(c.name, "text") for c in schema.columns)
    return BronzeTable(
        table_schema, name, (*columns, Column("source_line", "bigint")), index_columns=("_bronze_source_file",)
    )


SALES = bronze_table()
QUARANTINE_COLUMNS = ("blob_name", "line_number", "raw_line_encrypted", "reason", "_bronze_load_ts", "_bronze_batch_id")


def quarantine_ddl(schema: CsvSchema = SCHEMA) -> sql.Composed:
    table_schema, name = schema.quarantine_table.split(".")
    return sql.SQL(
        """
        create table if not exists {table} (
            blob_name           text not null,
            line_number         bigint not null,
            raw_line_encrypted  text not null,
            reason              text not null,
            _bronze_load_ts     timestamptz not null,
            _bronze_batch_id    uuid not null
        );
        create index if not exists {index} on {table} (blob_name, line_number)
        """
    ).format(table=sql.Identifier(table_schema, name), index=sql.Identifier(f"{name}_blob_name_idx"))


def ensure_quarantine(conn: psycopg.Connection, schema: CsvSchema = SCHEMA) -> None:
    """Create the quarantine table if missing, and bring a bronze.sales of the typed shape (before
    bronze kept values as text) to the current one. Checked first without DDL (even `if not exists`
    DDL takes locks that would queue behind a running load), changed serialized like bronze DDL."""
    if conn.execute(
        "select to_regclass(%s) is not null", (sql.Identifier(*schema.quarantine_table.split(".")).as_string(conn),)
    ).fetchone()[0] and not _typed_columns(conn):
        return
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('dw_platform.bronze_ddl', 0))")
        conn.execute(
            sql.SQL("create schema if not exists {}").format(sql.Identifier(schema.quarantine_table.split(".")[0]))
        )
        conn.execute(quarantine_ddl(schema))
        upgrade = [
            sql.SQL("alter column {0} type text using {0}::text").format(sql.Identifier(c))
            for c in _typed_columns(conn)
        ]
        if _typed_columns(conn, ("total_amount",)):
            upgrade.append(sql.SQL("drop column total_amount"))  # silver derives it now
        if upgrade:
            conn.execute(sql.SQL("alter table {} ").format(SALES.ident) + sql.SQL(", ").join(upgrade))


def _typed_columns(conn: psycopg.Connection, names: tuple[str, ...] | None = None) -> list[str]:
    """Source columns of bronze.sales that are not text yet (or, given names, those that exist)."""
    wanted = list(names) if names else [c.name for c in SALES.columns if c.pg_type == "text"]
    return [
        r[0]
        for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s"
            " and column_name = any(%s)" + ("" if names else " and data_type <> 'text'"),
            (SALES.schema, SALES.name, wanted),
        )
    ]


class SalesFile:
    """The parse of one blob; counts what it saw. Use once."""

    def __init__(self, blob_name: str, cipher: Cipher, schema: CsvSchema = SCHEMA):
        self.blob_name = blob_name
        self.schema = schema
        self.cipher = cipher
        self.reader = CsvReader(schema, self._quarantine)
        self._spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # (line, token, reason) pickles

    @property
    def header_found(self) -> bool:
        return self.reader.header is not None

    @property
    def rows_quarantined(self) -> int:
        return self.reader.rejected

    @property
    def data_lines(self) -> int:
        return self.reader.records

    def batches(self, chunks: Iterable[bytes]) -> Iterator[pa.RecordBatch]:
        yield from encrypt_columns(self.reader.batches(chunks), self.schema.sensitive_columns, self.cipher.primary_key)

    def _quarantine(self, rejected: Rejected) -> None:
        # The raw bytes may hold sensitive values: stored encrypted (exactly, whatever the encoding);
        # the reason never holds a sensitive value.
        pickle.dump((rejected.line, self.cipher.encrypt_bytes(rejected.raw), rejected.reason), self._spool)

    def write_quarantine(self, conn: psycopg.Connection, batch_id: UUID, load_ts: datetime) -> None:
        """Replace the blob's quarantine rows (inside the load's transaction; see ensure_quarantine)."""
        table_schema, name = self.schema.quarantine_table.split(".")
        table = sql.Identifier(table_schema, name)
        conn.execute(sql.SQL("delete from {} where blob_name = %s").format(table), (self.blob_name,))
        self._spool.seek(0)
        statement = sql.SQL("copy {} ({}) from stdin").format(
            table, sql.SQL(", ").join(sql.Identifier(c) for c in QUARANTINE_COLUMNS)
        )
        with conn.cursor().copy(statement) as copy:
            for _ in range(self.reader.rejected):
                line, raw, reason = pickle.load(self._spool)
                copy.write_row((self.blob_name, line, raw, reason, load_ts, batch_id))
        self._spool.close()

    def summary(self) -> dict:
        return {
            "data_lines": self.reader.records,
            "rows_loaded": self.reader.rows,
            "rows_quarantined": self.reader.rejected,
        }


def count_data_lines(chunks: Iterable[bytes], schema: CsvSchema = SCHEMA) -> int:
    """Data records of a blob (header and blank lines aside): what loaded + quarantined must add up to."""
    return count_records(chunks, schema.delimiter, schema.max_record_bytes)


__all__ = ["SALES", "SCHEMA", "SalesFile", "CsvFormatError", "count_data_lines", "ensure_quarantine"]
