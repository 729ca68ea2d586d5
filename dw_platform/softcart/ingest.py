"""The SoftCart bronze tables, and one access-log file into bronze rows and quarantine rows.

`AccessLogFile.batches()` feeds `bronze.load` with the parsed lines as COPY text; lines that do not parse are
spooled to a temporary file (memory stays bounded) and written to the quarantine table by
`write_quarantine`, which `bronze.load` calls inside its transaction, so a file's rows and its
quarantine rows replace their previous load together.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from uuid import UUID

import psycopg
from psycopg import sql

from dw_platform.lib.access_log import FIELDS, MAX_LINE_BYTES, BadLine, parse_copy_text
from dw_platform.lib.bronze import BronzeTable, Column, CopyText
from dw_platform.lib.quarantine import readable

# Append-only by rowid: a load adds the rows above the highest rowid bronze holds, copied straight
# in; the unique index on rowid makes a second copy of a row impossible even if two loads read the
# same rows. (Tables created while sales_data kept versions by row hash are migrated on first load.)
SALES_DATA = BronzeTable(
    schema="bronze",
    name="softcart_sales_data",
    columns=(
        Column("rowid", "bigint"),
        Column("product_id", "integer"),
        Column("customer_id", "integer"),
        Column("quantity", "integer"),
        Column("price", "numeric"),
        Column("timestamp", "timestamp"),
    ),
    append_key="rowid",
)
# Reference tables, read whole on every run; a load appends the rows that changed since (a new
# version of a product), so bronze keeps their history and a re-run adds nothing.
PRODUCTS = BronzeTable(
    schema="bronze",
    name="softcart_products",
    columns=(Column("product_id", "integer"), Column("product_name", "text"), Column("category", "text")),
    version_key=("product_id",),
)
CUSTOMERS = BronzeTable(
    schema="bronze",
    name="softcart_customers",
    columns=(Column("customer_id", "integer"), Column("country", "text")),
    version_key=("customer_id",),
)
# Every field as written (text); silver types them. line_number is the physical line in the file.
WEB_ACCESS_LOG = BronzeTable(
    schema="bronze",
    name="web_access_log",
    columns=(Column("line_number", "bigint"), *(Column(name, "text") for name in FIELDS)),
    index_columns=("_bronze_source_file",),
)
QUARANTINE = sql.Identifier("bronze", "web_access_log_quarantine")
# raw_bytes: the line exactly as in the file; raw_line: the same for reading (lib/quarantine.py).
QUARANTINE_COLUMNS = (
    "source_file",
    "line_number",
    "raw_line",
    "raw_bytes",
    "reason",
    "_bronze_load_ts",
    "_bronze_batch_id",
)


class AccessLogFile:
    """The parse of one access-log file; counts what it saw. Use once."""

    def __init__(self, source_file: str, max_line_bytes: int = MAX_LINE_BYTES):
        self.source_file = source_file
        self.max_line_bytes = max_line_bytes
        self.lines = 0
        self.lines_loaded = 0
        self.lines_quarantined = 0
        self.reasons: dict[str, int] = {}
        self._spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # (line, raw bytes, reason) pickles

    def batches(self, chunks: Iterable[bytes]) -> Iterator[CopyText]:
        """The good lines as COPY text batches (the parser formats them; nothing per row here)."""
        for parsed in parse_copy_text(chunks, max_line_bytes=self.max_line_bytes):
            for bad in parsed.bad:
                self._quarantine(bad)
            self.lines += parsed.rows + len(parsed.bad)
            self.lines_loaded += parsed.rows
            if parsed.rows:
                yield CopyText(parsed.copy_text, parsed.rows)

    def _quarantine(self, bad: BadLine) -> None:
        pickle.dump((bad.line_number, bad.raw, bad.reason), self._spool)
        self.lines_quarantined += 1
        kind = bad.reason.split(" '")[0].split(" (")[0]
        self.reasons[kind] = self.reasons.get(kind, 0) + 1

    def write_quarantine(self, conn: psycopg.Connection, batch_id: UUID, load_ts: datetime) -> None:
        """Replace the file's quarantine rows (inside the load's transaction)."""
        conn.execute(sql.SQL("delete from {} where source_file = %s").format(QUARANTINE), (self.source_file,))
        self._spool.seek(0)
        statement = sql.SQL("copy {} ({}) from stdin").format(
            QUARANTINE, sql.SQL(", ").join(sql.Identifier(c) for c in QUARANTINE_COLUMNS)
        )
        with conn.cursor().copy(statement) as copy:
            for _ in range(self.lines_quarantined):
                line, raw, reason = pickle.load(self._spool)
                copy.write_row((self.source_file, line, readable(raw), raw, reason, load_ts, batch_id))
        self._spool.close()
