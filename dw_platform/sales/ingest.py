"""One sales CSV blob into bronze rows and quarantine rows, streaming, under the schema file.

`SalesFile.batches()` feeds `bronze.load` with Arrow batches: the values as they arrived (text,
only the schema's declared rules applied), sensitive columns Fernet-encrypted on every core, and
each row's line number. Records that do not load are spooled to a temporary file (memory-bounded:
line, encrypted raw bytes, reason) and written to the quarantine table by `write_quarantine`,
which `bronze.load` calls inside its transaction, so a file's rows and quarantine rows replace
their previous versions together. The quarantine table: dw_platform/migrations/0002_sales_quarantine.sql.
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

from dw_platform.lib.bronze import BronzeTable, Column, ExpressionIndex
from dw_platform.lib.crypto import Cipher
from dw_platform.lib.csv_stream import CsvFormatError, CsvReader, CsvSchema, Rejected, count_records
from dw_platform.lib.fernet_batch import encrypt_columns

SCHEMA = CsvSchema.from_yaml(Path(__file__).with_name("schema.yaml"))


# Silver's order key: order_id trimmed of whitespace, NBSP too (dbt macro sales_trim, written the
# same way so that the index answers silver's lookups of an order's rows in every blob).
ORDER_KEY = ExpressionIndex("order_key", r"regexp_replace(order_id, '^[\s\u00a0]+|[\s\u00a0]+$', '', 'g')")


def bronze_table(schema: CsvSchema = SCHEMA) -> BronzeTable:
    """Every source column is text (values as they arrived; silver types them), plus the line."""
    table_schema, name = schema.table.split(".")
    columns = tuple(Column(c.name, "text") for c in schema.columns)
    return BronzeTable(
        table_schema,
        name,
        (*columns, Column("source_line", "bigint")),
        index_columns=("_bronze_source_file",),
        expression_indexes=(ORDER_KEY,),
    )


SALES = bronze_table()
QUARANTINE_COLUMNS = ("blob_name", "line_number", "raw_line_encrypted", "reason", "_bronze_load_ts", "_bronze_batch_id")


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
        """Replace the blob's quarantine rows (inside the load's transaction)."""
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


__all__ = ["SALES", "SCHEMA", "SalesFile", "CsvFormatError", "count_data_lines"]
