"""Bronze for the __domain__ domain: each arrival day's __domain__.csv from its landing zone (a local
folder or a blob container) into bronze.__domain___events, one partition per day, its bad records
into bronze.__domain___quarantine in the same transaction (the tables: `dw_platform/__domain__/ingest.py`).
"""

from datetime import date

import dagster as dg
import pyarrow as pa

from dw_platform.__domain__.ingest import EVENTS, SCHEMA, write_quarantine
from dw_platform.defs.__domain__.partitions import DAILY, FILE_NAME, landed_path
from dw_platform.domains import asset_attributes
from dw_platform.lib import bronze
from dw_platform.lib.bronze import LoadScope
from dw_platform.lib.csv_stream import CsvFormatError, CsvReader, Rejected
from dw_platform.lib.landing import LandingZone
from dw_platform.lib.warehouse import PostgresWarehouse


def day_scope(partition_keys: list[str], window: dg.TimeWindow) -> LoadScope:
    """The rows of bronze a load (or a check) of these days owns: their arrival_date."""
    return LoadScope.time_window(partition_keys, "arrival_date", window.start, window.end)


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
