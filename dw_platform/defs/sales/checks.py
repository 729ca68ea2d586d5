"""Bronze checks for bronze.sales. The table checks are errors and block silver and gold; in a run
they check the run's blob, run on their own the blob loaded last. `sales_incoming_not_stale`
and `sales_no_identical_files` watch the container and the ledger rather than the table: they run
on their own schedule, not in ingest runs.
"""

import os
from datetime import timedelta

import dagster as dg
from psycopg import sql

from dw_platform.defs.sales.assets import blob_scope, locate
from dw_platform.defs.sales.partitions import INCOMING
from dw_platform.lib import bronze_checks
from dw_platform.lib.blob import BlobStorage
from dw_platform.lib.bronze import LoadScope, ensure_bronze_objects
from dw_platform.lib.landing import BlobLanding
from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.sales.ingest import SALES, SCHEMA, count_data_lines

ASSET = dg.AssetKey(["bronze", "sales"])


def _scope(context: dg.AssetCheckExecutionContext, conn) -> LoadScope | None:
    if context.has_partition_key:
        return blob_scope(context.partition_key)
    row = conn.execute(
        "select partition_key from bronze.batch_ledger where target_table = %s and status = 'succeeded'"
        " order by finished_at desc limit 1",
        (SALES.qualified_name,),
    ).fetchone()
    return blob_scope(row[0]) if row else None


@dg.asset_check(
    asset=ASSET, blocking=True, description="The table has exactly the schema's columns and the lineage columns."
)
def sales_expected_columns(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        return bronze_checks.expected_columns(conn, SALES)


@dg.asset_check(asset=ASSET, blocking=True, description="No row is empty in every source column.")
def sales_no_all_null_rows(context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        ensure_bronze_objects(conn, SALES)
        # source_line is always set by the loader: it says nothing about the row.
        return bronze_checks.no_all_null_rows(conn, SALES, _scope(context, conn), ignore=("source_line",))


@dg.asset_check(
    asset=ASSET,
    blocking=True,
    description="Rows loaded + rows quarantined for the blob = the data lines the blob holds (re-read from storage).",
)
def sales_rows_reconcile_with_blob(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse, sales_storage: BlobStorage
) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        ensure_bronze_objects(conn, SALES)
        scope = _scope(context, conn)
        if scope is None:
            return dg.AssetCheckResult(passed=True, metadata={"scope": "nothing loaded yet"})
        key = scope.partition_keys[0]
        loaded = conn.execute(
            sql.SQL("select count(*) from {} where _bronze_source_file = %s").format(SALES.ident),
            (scope.params["blob"],),
        ).fetchone()[0]
        quarantined = conn.execute(
            sql.SQL("select count(*) from {} where blob_name = %s").format(
                sql.Identifier(*SCHEMA.quarantine_table.split("."))
            ),
            (scope.params["blob"],),
        ).fetchone()[0]
    blob = locate(sales_storage, key)
    if blob is None:
        return dg.AssetCheckResult(passed=False, metadata={"blob": key, "problem": "blob not found in storage"})
    data_lines = count_data_lines(sales_storage.chunks(blob))
    return dg.AssetCheckResult(
        passed=loaded + quarantined == data_lines,
        metadata={"blob": blob.name, "rows_loaded": loaded, "rows_quarantined": quarantined, "data_lines": data_lines},
    )


@dg.asset_check(
    asset=ASSET,
    blocking=False,
    description="No blob has waited in incoming/ longer than DW_SALES_MAX_WAIT_MINUTES (default 60): a blob "
    "that stays there was never loaded (sensor stopped, runs failing or queued behind others).",
)
def sales_incoming_not_stale(sales_storage: BlobStorage) -> dg.AssetCheckResult:
    max_wait = timedelta(minutes=float(os.environ.get("DW_SALES_MAX_WAIT_MINUTES", "60")))
    return bronze_checks.files_not_waiting(BlobLanding(sales_storage).list(INCOMING), max_wait)


@dg.asset_check(
    asset=ASSET,
    blocking=False,
    description="No blob was refused in the last 24 hours for holding the same bytes as a blob loaded before (a "
    "source that sent a file twice under two names; the refused blob is in failed/ with its report). Set "
    "DW_SALES_ACCEPT_IDENTICAL_FILES=true where identical files are legitimate.",
)
def sales_no_identical_files(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        return bronze_checks.no_identical_files(conn, SALES)
