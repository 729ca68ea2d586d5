"""Bronze for the customer domain: the CRM's customer_profile, one partition per day modified.

Bronze keeps every version of a customer it ever read (business key + modification time + row
hash): re-running or backfilling a day adds the versions it did not have and drops none, even if
the customer has changed since. Each load re-reads a lookback before its day, so rows committed
late on the source (long transactions, clock skew) still arrive. The first partition's load is
also the history load: it reads every row modified before the partitions start and every row
without a modification time. The table is partitioned by month of last_modified_ts in
PostgreSQL, so a day's load and its checks touch that month only.

The rows come from arrow-odbc in the reader process (column-wise, no Python object per value)
and the loader turns each Arrow batch into binary COPY a column at a time.
"""

import time
from datetime import date, datetime, timedelta

import dagster as dg
from pydantic import Field

from dw_platform.defs.customer.partitions import START_DATE, customer_daily
from dw_platform.domains import asset_attributes
from dw_platform.lib import bronze
from dw_platform.lib.bronze import BronzeTable, Column, LoadScope, Watermark
from dw_platform.lib.bronze_partitions import RangePartitions
from dw_platform.lib.odbc import OdbcSource, window_query
from dw_platform.lib.partition_rows import record_daily_row_counts, rows_per_day, table_rows
from dw_platform.lib.warehouse import PostgresWarehouse

SOURCE_TABLE = "dbo.customer_profile"
WATERMARK_COLUMN = "last_modified_ts"

CUSTOMER_PROFILE_RAW = BronzeTable(
    schema="bronze",
    name="customer_profile_raw",
    columns=(
        Column("customer_id", "integer"),
        Column("first_name", "text"),
        Column("last_name", "text"),
        Column("email", "text"),
        Column("phone", "text"),
        Column("country", "text"),
        Column("city", "text"),
        Column("date_of_birth", "date"),
        Column("customer_segment", "text"),
        Column("loyalty_tier", "text"),
        Column("marketing_opt_in", "boolean"),
        Column("created_ts", "timestamp"),
        Column("last_modified_ts", "timestamp"),
    ),
    version_key=("customer_id", WATERMARK_COLUMN),
    # The version index (last_modified_ts, row hash) serves every window of last_modified_ts.
    partitions=RangePartitions(WATERMARK_COLUMN, "month"),
)


def read_scope(partition_keys, start: datetime, end: datetime, lookback: timedelta = timedelta(0)) -> LoadScope:
    """What a load (or a check) of these partitions reads: their window, widened back by the
    lookback — and, when it holds the first partition, widened to the history."""
    scope = LoadScope.time_window(partition_keys, WATERMARK_COLUMN, start, end, lookback)
    return scope.with_history(WATERMARK_COLUMN) if start.date() <= START_DATE else scope


def source_query(scope: LoadScope, dialect: str) -> tuple[str, list]:
    """The source's SELECT of `scope`'s read and its parameters."""
    history = scope.read_start is None
    query = window_query(SOURCE_TABLE, CUSTOMER_PROFILE_RAW.source_column_names, WATERMARK_COLUMN, dialect, history)
    start, end = scope.read_params
    return query, [end] if history else [start, end]


class CustomerLoadConfig(dg.Config):
    lookback_hours: int = Field(
        default=24,
        ge=0,
        description="Also re-read this many hours before the partition's window and add the versions bronze "
        "does not hold yet (rows committed late on the source).",
    )


@dg.asset(
    key=["bronze", "customer_profile_raw"],
    **asset_attributes("customer"),
    kinds={"odbc", "postgres"},
    partitions_def=customer_daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description=f"{SOURCE_TABLE} from the customer CRM over ODBC, one partition per day of {WATERMARK_COLUMN}.",
)
def customer_profile_raw(
    context: dg.AssetExecutionContext,
    config: CustomerLoadConfig,
    warehouse: PostgresWarehouse,
    customer_source: OdbcSource,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    watermark = Watermark(f"{customer_source.name}.{SOURCE_TABLE}", WATERMARK_COLUMN)
    months = month_windows(window.start, window.end)
    results, counts, started = [], {}, time.monotonic()
    with warehouse.connect() as conn:
        for number, (start, end) in enumerate(months, 1):
            keys = [k for k in context.partition_keys if start.date() <= date.fromisoformat(k) < end.date()]
            # The run's first read re-reads the lookback; later months start where the previous one ended.
            lookback = timedelta(hours=config.lookback_hours) if number == 1 else timedelta(0)
            result = load_window(context, conn, customer_source, watermark, keys, start, end, lookback)
            results.append(result)
            # Each day its own count: the versions bronze holds for it, and those this load added.
            counts |= rows_per_day(
                conn, CUSTOMER_PROFILE_RAW.qualified_name, WATERMARK_COLUMN, start, end, str(result.batch_id)
            )
            if len(months) > 1:
                context.log.info(month_progress(results, len(months), time.monotonic() - started))
        total = table_rows(conn, CUSTOMER_PROFILE_RAW.qualified_name)
    result = bronze.combined(results)
    record_daily_row_counts(context, context.asset_key, context.partition_keys, counts, loaded_label="rows_loaded")
    context.log.info(result.summary)
    metadata = {**result.metadata(), **total, "rows_loaded_in_run": result.rows_loaded}
    return dg.MaterializeResult(metadata=metadata | ({"months_loaded": len(months)} if len(months) > 1 else {}))


def month_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at the first of each month: a range run loads (and commits) a month at a
    time, so a long backfill reports its progress and keeps the months it finished if it fails."""
    windows, cut = [], start
    while cut < end:
        following = (cut.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        windows.append((cut, min(following, end)))
        cut = following
    return windows


def load_window(
    context, conn, source: OdbcSource, watermark: Watermark, keys, start, end, lookback
) -> bronze.LoadResult:
    """One read of the source, [start, end) of the run, into bronze in one transaction."""
    # Where the last load stopped (the watermark, committed with its rows): a run after skipped
    # or failed ones reads back to it, so what they did not read arrives now.
    stopped = bronze.last_watermark(conn, watermark)
    scope = read_scope(keys, start, end, lookback).resumed_from(stopped)
    query, params = source_query(scope, source.dialect)
    if scope.read_start is None:
        context.log.info(
            f"extracting {SOURCE_TABLE} rows modified before {scope.read_end} or never (history load: the run "
            f"holds the first partition, {START_DATE})"
        )
    else:
        context.log.info(
            f"extracting {SOURCE_TABLE} rows modified in [{scope.read_start}, {scope.read_end}) (window from "
            f"{start}, {lookback} lookback, last load stopped at {stopped})"
        )
    return bronze.load(
        conn,
        CUSTOMER_PROFILE_RAW,
        source.arrow_stream(query, params, read_ahead=bronze.READ_AHEAD),
        asset_key=context.asset_key.to_user_string(),
        scope=scope,
        source=f"{source.name}:{SOURCE_TABLE}",
        watermark=watermark,
        run_id=context.run.run_id,
        log=context.log.info,
    )


def month_progress(results: list[bronze.LoadResult], months: int, elapsed: float) -> str:
    """A range run's progress after a month: that month's rows and speed, the run's so far, and
    an ETA from the months left at the run's pace."""
    last, done = results[-1], len(results)
    read = sum(r.rows_read for r in results)
    eta = elapsed / done * (months - done)
    return (
        f"month {done}/{months} ({last.scope.label}): {last.rows_read:,} rows read, {last.rows_loaded:,} new, "
        f"{last.rows_per_second:,.0f} rows/s; run so far {read:,} rows in {elapsed:,.0f}s "
        f"({read / elapsed if elapsed else 0:,.0f} rows/s), ETA {eta:,.0f}s"
    )
