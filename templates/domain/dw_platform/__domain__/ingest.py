"""The __domain__ domain's bronze tables: each arrival day's __domain__.csv lands in
bronze.__domain___events under schema.yaml beside this module, values as they arrived (text). A
record that does not load (no event_id, a value not of its declared type, the wrong number of
fields) goes to bronze.__domain___quarantine with its line, raw text and reason, in the load's own
transaction: re-running a day replaces its rows and its quarantine together. The quarantine
table is a versioned migration (dw_platform/migrations/NNNN___domain___quarantine.sql), applied
before the first load; a change of its shape is a new migration.
"""

from datetime import date, datetime
from pathlib import Path
from uuid import UUID

import psycopg
from psycopg import sql

from dw_platform.lib.bronze import BronzeTable, Column
from dw_platform.lib.csv_stream import CsvSchema, Rejected
from dw_platform.lib.landing import LandedFile

SCHEMA = CsvSchema.from_yaml(Path(__file__).with_name("schema.yaml"))
EVENTS = BronzeTable(
    "bronze",
    "__domain___events",
    (
        *(Column(c.name, "text") for c in SCHEMA.columns),
        Column("arrival_date", "date"),
        Column("source_line", "bigint"),
    ),
    index_columns=("arrival_date",),
)
QUARANTINE = sql.Identifier(*SCHEMA.quarantine_table.split("."))


def write_quarantine(
    conn: psycopg.Connection, found: LandedFile, day: date, rejected: list[Rejected], batch_id: UUID, load_ts: datetime
) -> None:
    """Replace the file's quarantine rows; runs inside the load's transaction (`bronze.load` after_copy)."""
    conn.execute(sql.SQL("delete from {} where source_file = %s").format(QUARANTINE), (found.uri,))
    columns = "source_file, arrival_date, line_number, raw, reason, _bronze_load_ts, _bronze_batch_id"
    with conn.cursor().copy(sql.SQL("copy {} (" + columns + ") from stdin").format(QUARANTINE)) as copy:
        for r in rejected:
            raw = r.raw.decode("utf-8", "backslashreplace")
            copy.write_row((found.uri, day, r.line, raw, r.reason, load_ts, batch_id))
