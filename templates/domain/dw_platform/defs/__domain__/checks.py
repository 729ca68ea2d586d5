"""Bronze checks for bronze.__domain___events; all are errors and block silver and gold.

In a run they check the run's day; run on their own, the day loaded last (from the batch ledger).
"""

import dagster as dg
import psycopg
from psycopg import sql

from dw_platform.__domain__.ingest import EVENTS, QUARANTINE
from dw_platform.defs.__domain__.assets import day_scope
from dw_platform.defs.__domain__.partitions import landed_path
from dw_platform.lib import bronze_checks
from dw_platform.lib.bronze import LoadScope
from dw_platform.lib.csv_stream import CsvFormatError, count_records
from dw_platform.lib.landing import LandingZone
from dw_platform.lib.warehouse import PostgresWarehouse

ASSET = dg.AssetKey(["bronze", "__domain___events"])


def checked_scope(context: dg.AssetCheckExecutionContext, conn: psycopg.Connection) -> LoadScope | None:
    if context.has_partition_key or context.has_partition_key_range:
        return day_scope(context.partition_keys, context.partition_time_window)
    return bronze_checks.latest_loaded_scope(conn, EVENTS, "arrival_date")


@dg.asset_check(
    asset=ASSET,
    blocking=True,
    description="Every record of the day's file is in bronze or in the quarantine with its reason: none lost, "
    "none doubled. If it fails, re-run the day (a load replaces the day).",
)
def __domain___events_records_reconcile_with_file(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse, __domain___landing: LandingZone
) -> dg.AssetCheckResult:
    zone = __domain___landing.landing()
    with warehouse.connect() as conn:
        scope = checked_scope(context, conn)
        if scope is None:
            return dg.AssetCheckResult(passed=True, metadata={"scope": "nothing loaded yet"})
        in_files = loaded = quarantined = 0
        for day in scope.partition_keys:
            found = zone.find(landed_path(day))
            if found is None:
                return dg.AssetCheckResult(passed=False, metadata={"problem": f"{landed_path(day)} is not there"})
            try:
                in_files += count_records(zone.chunks(found))
            except CsvFormatError as exc:
                return dg.AssetCheckResult(passed=False, metadata={"problem": f"{found.uri}: {exc}"})
            loaded += conn.execute(
                sql.SQL("select count(*) from {} where _bronze_source_file = %s").format(EVENTS.ident), (found.uri,)
            ).fetchone()[0]
            quarantined += conn.execute(
                sql.SQL("select count(*) from {} where source_file = %s").format(QUARANTINE), (found.uri,)
            ).fetchone()[0]
    return dg.AssetCheckResult(
        passed=loaded + quarantined == in_files,
        metadata={
            "records_in_files": in_files,
            "rows_loaded": loaded,
            "rows_quarantined": quarantined,
            "scope": scope.label,
        },
    )


@dg.asset_check(asset=ASSET, blocking=True, description="The table has exactly the expected columns.")
def __domain___events_expected_columns(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        return bronze_checks.expected_columns(conn, EVENTS)


@dg.asset_check(asset=ASSET, blocking=True, description="No row is empty in every value column.")
def __domain___events_no_all_null_rows(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse
) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        scope = checked_scope(context, conn)
        if scope is None:
            return dg.AssetCheckResult(passed=True, metadata={"scope": "nothing loaded yet"})
        # event_id and occurred_at are required (a record without them is quarantined): judge the rest.
        ignore = ("event_id", "occurred_at", "arrival_date", "source_line")
        return bronze_checks.no_all_null_rows(conn, EVENTS, scope, ignore=ignore)
