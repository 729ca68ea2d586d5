"""Bronze for the __domain__ domain: each arrival day's __domain__.csv from its landing zone (a local
folder or a blob container) into bronze.__domain___events, one partition per day.

Values land as they arrived (text), under schema.yaml beside this module. A record that does not
load (no event_id, a value not of its declared type, the wrong number of fields) goes to
bronze.__domain___quarantine with its line, raw text and reason, in the load's own transaction:
re-running a day replaces its rows and its quarantine together, so nothing doubles or goes missing.
"""

from datetime import date, datetime
from pathlib import Path
from uuid import UUID

import dagster as dg
import psycopg
import pyarrow as pa
from psycopg import sql

from dw_platform.defs.__domain__.partitions import DAILY, FILE_NAME, landed_path
from dw_platform.domains import asset_attributes
from dw_platform.lib import bronze
from dw_platform.lib.bronze import BronzeTable, Column, LoadScope
from dw_platform.lib.csv_stream import CsvFormatError, CsvReader, CsvSchema, Rejected
from dw_platform.lib.landing import LandedFile, LandingZone
from dw_platform.lib.warehouse import PostgresWarehouse

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
QUARANTINE_DDL = sql.SQL(
    """
    create table if not exists {} (
        source_file      text not null,
        arrival_date     date not null,
        line_number      bigint not null,
        raw              text not null,
        reason           text not null,
        _bronze_load_ts  timestamptz not null,
        _bronze_batch_id uuid not null
    )
    """
).format(QUARANTINE)


def day_scope(partition_keys: list[str], window: dg.TimeWindow) -> LoadScope:
    """The rows of bronze a load (or a check) of these days owns: their arrival_date."""
    return LoadScope.time_window(partition_keys, "arrival_date", window.start, window.end)


def write_quarantine(
    conn: psycopg.Connection, found: LandedFile, day: date, rejected: list[Rejected], batch_id: UUID, load_ts: datetime
) -> None:
    """Replace the file's quarantine rows; runs inside the load's transaction (`bronze.load` after_copy)."""
    conn.execute("select pg_advisory_xact_lock(hashtextextended('dw_platform.bronze_ddl', 0))")
    conn.execute(QUARANTINE_DDL)
    conn.execute(sql.SQL("delete from {} where source_file = %s").format(QUARANTINE), (found.uri,))
    columns = "source_file, arrival_date, line_number, raw, reason, _bronze_load_ts, _bronze_batch_id"
    with conn.cursor().copy(sql.SQL("copy {} (" + columns + ") from stdin").format(QUARANTINE)) as copy:
        for r in rejected:
            raw = r.raw.decode("utf-8", "backslashreplace")
            copy.write_row((found.uri, day, r.line, raw, r.reason, load_ts, batch_id))


@dg.asset(
    key=["bronze", "__domain___events"],
    **asset_attributes("__domain__"),
    kinds={"csv", "postgres"},
    partitions_def=DAILY,
    description=f"<day>/{FILE_NAME} from the __domain__ landing zone into bronze.__domain___events, values as "
    "they arrived; unreadable records in bronze.__domain___quarantine with the reason.",
)
def __domain___events(
    context: dg.AssetExecutionContext, warehouse: PostgresWarehouse, __domain___landing: LandingZone
) -> dg.MaterializeResult:
    zone = __domain___landing.landing()
    path = landed_path(context.partition_key)
    found = zone.find(path)
    if found is None:
        raise dg.Failure(f"{path} has not arrived in the __domain__ landing zone", allow_retries=False)
    context.log.info(f"loading {found.uri} ({found.size:,} bytes, version {found.version})")
    day = date.fromisoformat(context.partition_key)
    rejected: list[Rejected] = []
    reader = CsvReader(SCHEMA, rejected.append)

    def rows():
        for batch in reader.batches(zone.chunks(found)):
            yield batch.append_column("arrival_date", pa.array([day] * batch.num_rows, pa.date32()))

    with warehouse.connect() as conn:
        try:
            result = bronze.load(
                conn,
                EVENTS,
                rows(),
                asset_key=context.asset_key.to_user_string(),
                scope=day_scope(context.partition_keys, context.partition_time_window),
                source=found.uri,
                run_id=context.run.run_id,
                log=context.log.info,
                after_copy=lambda c, batch_id, load_ts: write_quarantine(c, found, day, rejected, batch_id, load_ts),
            )
        except dg.Failure as failure:
            if isinstance(failure.__cause__, CsvFormatError):  # the file as a whole is not this CSV
                raise dg.Failure(f"{found.uri}: {failure.__cause__}", allow_retries=False) from None
            raise
    context.log.info(f"{result.summary}; quarantined {len(rejected):,}")
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            "source_file": found.uri,
            "data_lines": reader.records,
            "rows_quarantined": len(rejected),
        }
    )
