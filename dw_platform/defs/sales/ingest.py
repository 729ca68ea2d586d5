"""One sales CSV blob into bronze rows and quarantine rows, streaming, under the schema file.

`SalesFile.batches()` feeds `bronze.load` with validated, cleaned, encrypted rows (plus the
derived `total_amount` and the row's line number); rows that fail validation are spooled to a
temporary file (memory-bounded) and written to the quarantine table by `write_quarantine`,
which `bronze.load` calls inside its transaction, so a file's rows and quarantine rows replace
their previous versions together.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
from psycopg import sql

from dw_platform.lib.bronze import BronzeTable, Column
from dw_platform.lib.crypto import Cipher
from dw_platform.lib.csv_stream import CsvFormatError, CsvSchema, RowError, records

SCHEMA = CsvSchema.from_yaml(Path(__file__).with_name("schema.yaml"))
BATCH_ROWS = 10_000
CENTS = Decimal("0.01")


def bronze_table(schema: CsvSchema = SCHEMA) -> BronzeTable:
    table_schema, name = schema.table.split(".")
    columns = tuple(Column(c.name, "text" if c.sensitive else c.pg_type) for c in schema.columns)
    derived = tuple(Column(n, t) for n, t in schema.derived)
    return BronzeTable(table_schema, name, (*columns, *derived, Column("source_line", "bigint")),
                       index_columns=("_bronze_source_file",))


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
    """Create the quarantine table if missing. Checked first without DDL (even `if not exists`
    DDL takes locks that would queue behind a running load), created serialized like bronze DDL."""
    if conn.execute("select to_regclass(%s) is not null", (schema.quarantine_table,)).fetchone()[0]:
        return
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('dw_platform.bronze_ddl', 0))")
        conn.execute("create schema if not exists " + schema.quarantine_table.split(".")[0])
        conn.execute(quarantine_ddl(schema))


class SalesFile:
    """The parse of one blob; counts what it saw. Use once."""

    def __init__(self, blob_name: str, cipher: Cipher, schema: CsvSchema = SCHEMA):
        self.blob_name = blob_name
        self.schema = schema
        self.cipher = cipher
        self.data_lines = 0
        self.rows_valid = 0
        self.rows_quarantined = 0
        self.header_found = False
        self._spool = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", newline="", encoding="utf-8")
        self._spool_writer = csv.writer(self._spool)

    def batches(self, chunks: Iterable[bytes]) -> Iterator[list[tuple]]:
        stream = records(chunks, delimiter=self.schema.delimiter)
        header = next(stream, None)
        if header is None:
            return  # an empty file: nothing to load, nothing to quarantine
        self.header_found = True
        converter = self.schema.bind(header)
        converter.encrypt = self.cipher.encrypt
        position = {c.name: i for i, c in enumerate(self.schema.columns)}
        quantity, price = position["quantity"], position["unit_price"]
        batch: list[tuple] = []
        for record in stream:
            self.data_lines += 1
            try:
                if record.fields is None:
                    raise RowError(record.error)
                values = converter.convert(record.fields)
            except RowError as exc:
                self._quarantine(record.line, record.raw, str(exc))
                continue
            total = (Decimal(values[quantity]) * values[price]).quantize(CENTS)
            batch.append((*values, total, record.line))
            self.rows_valid += 1
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch

    def _quarantine(self, line: int, raw: str, reason: str) -> None:
        # The raw line may hold sensitive values: it is stored encrypted, the reason never holds them.
        self._spool_writer.writerow((line, self.cipher.encrypt(raw), reason))
        self.rows_quarantined += 1

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
            for line, raw, reason in csv.reader(self._spool):
                copy.write_row((self.blob_name, int(line), raw, reason, load_ts, batch_id))
        self._spool.close()

    def summary(self) -> dict:
        return {"data_lines": self.data_lines, "rows_loaded": self.rows_valid,
                "rows_quarantined": self.rows_quarantined}


def count_data_lines(chunks: Iterable[bytes], schema: CsvSchema = SCHEMA) -> int:
    """Non-blank CSV records after the header: what loaded + quarantined must add up to."""
    return max(sum(1 for _ in records(chunks, delimiter=schema.delimiter)) - 1, 0)


__all__ = ["SALES", "SCHEMA", "SalesFile", "CsvFormatError", "count_data_lines", "ensure_quarantine"]
