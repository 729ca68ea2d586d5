"""Bronze checks for customer_profile_raw; all are errors and block silver and gold."""

import dagster as dg

from dw_platform.defs.customer.assets import CUSTOMER_PROFILE_RAW, WATERMARK_COLUMN, read_scope, source_query
from dw_platform.lib import bronze_checks
from dw_platform.lib.odbc import OdbcSource
from dw_platform.lib.warehouse import PostgresWarehouse

ASSET = dg.AssetKey(["bronze", "customer_profile_raw"])


@dg.asset_check(asset=ASSET, blocking=True, description="The table has exactly the source and lineage columns.")
def customer_profile_raw_expected_columns(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        return bronze_checks.expected_columns(conn, CUSTOMER_PROFILE_RAW)


@dg.asset_check(asset=ASSET, blocking=True, description="No row is empty in every source column.")
def customer_profile_raw_no_all_null_rows(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse
) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        scope = bronze_checks.run_scope(context, WATERMARK_COLUMN)
        return bronze_checks.no_all_null_rows(conn, CUSTOMER_PROFILE_RAW, scope, ignore=(WATERMARK_COLUMN,))


@dg.asset_check(
    asset=ASSET,
    blocking=True,
    description="Every row the source holds for the partition's window is a version in bronze (bronze keeps "
    "older versions too). If it fails, re-run the partition: a load adds only what is missing.",
)
def customer_profile_raw_holds_every_source_version(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse, customer_source: OdbcSource
) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        scope = bronze_checks.run_scope(context, WATERMARK_COLUMN) or bronze_checks.latest_loaded_scope(
            conn, CUSTOMER_PROFILE_RAW, WATERMARK_COLUMN
        )
        if scope is not None:  # the window (with the history, for the first partition), no lookback
            scope = read_scope(scope.partition_keys, scope.window_start, scope.window_end)
        return bronze_checks.source_versions_in_bronze(
            conn,
            CUSTOMER_PROFILE_RAW,
            scope,
            lambda s: customer_source.arrow_stream(*source_query(s, customer_source.dialect)),
        )
