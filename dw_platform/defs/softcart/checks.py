"""Bronze checks for the SoftCart domain; all are errors and block silver and gold.

Run on their own (not in a run), the web log checks look at the file loaded last.
"""

import os
from datetime import timedelta

import dagster as dg
from psycopg import sql

from dw_platform.defs.softcart.assets import (
    ROWID,
    SALES_SOURCE_TABLE,
    file_scope,
    locate_log,
    log_chunks,
    select_columns,
    source_file,
    table_scope,
)
from dw_platform.defs.softcart.partitions import INCOMING
from dw_platform.lib import bronze_checks
from dw_platform.lib.access_log import count_lines
from dw_platform.lib.bronze import BronzeTable, ensure_bronze_objects
from dw_platform.lib.landing import LandingZone
from dw_platform.lib.odbc import OdbcSource, quote_ident, quote_table
from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.softcart.ingest import (
    CUSTOMERS,
    PRODUCTS,
    QUARANTINE,
    SALES_DATA,
    WEB_ACCESS_LOG,
)

SALES_ASSET = dg.AssetKey(["bronze", "softcart_sales_data"])
WEB_ASSET = dg.AssetKey(["bronze", "web_access_log"])


def _expected_columns(table: BronzeTable, asset: dg.AssetKey):
    @dg.asset_check(
        asset=asset,
        name=f"{table.name}_expected_columns",
        blocking=True,
        description="The table has exactly the source and lineage columns.",
    )
    def check(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            return bronze_checks.expected_columns(conn, table)

    return check


def _reference_rows_in_bronze(table: BronzeTable, source_table: str):
    @dg.asset_check(
        asset=dg.AssetKey(["bronze", table.name]),
        name=f"{table.name}_holds_every_source_row",
        blocking=True,
        description=f"Every row of {source_table} as the source holds it now is a "
        "version in bronze (bronze keeps older versions too).",
    )
    def check(warehouse: PostgresWarehouse, softcart_source: OdbcSource) -> dg.AssetCheckResult:
        query = select_columns(table, source_table, softcart_source.dialect)
        with warehouse.connect() as conn:
            ensure_bronze_objects(conn, table)
            return bronze_checks.source_versions_in_bronze(
                conn, table, table_scope(), lambda _scope: softcart_source.stream(query, [])
            )

    return check


softcart_sales_data_expected_columns = _expected_columns(SALES_DATA, SALES_ASSET)
softcart_products_expected_columns = _expected_columns(PRODUCTS, dg.AssetKey(["bronze", PRODUCTS.name]))
softcart_customers_expected_columns = _expected_columns(CUSTOMERS, dg.AssetKey(["bronze", CUSTOMERS.name]))
softcart_products_holds_every_source_row = _reference_rows_in_bronze(PRODUCTS, "products")
softcart_customers_holds_every_source_row = _reference_rows_in_bronze(CUSTOMERS, "customers")
web_access_log_expected_columns = _expected_columns(WEB_ACCESS_LOG, WEB_ASSET)


@dg.asset_check(
    asset=SALES_ASSET,
    blocking=True,
    description="No row the newest load added (its rowids, through the rowid index) is empty in every source "
    "column (rowid aside).",
)
def softcart_sales_data_no_all_null_rows(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        ensure_bronze_objects(conn, SALES_DATA)
        scope = bronze_checks.latest_keys_scope(conn, SALES_DATA)
        return bronze_checks.no_all_null_rows(conn, SALES_DATA, scope, ignore=(ROWID,))


@dg.asset_check(
    asset=SALES_ASSET,
    blocking=True,
    description="No rowid is in bronze twice: the unique index on rowid is in place and valid (PostgreSQL "
    "enforces it; a catalog lookup, not a scan).",
)
def softcart_sales_data_rowid_unique(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        ensure_bronze_objects(conn, SALES_DATA)
        return bronze_checks.append_key_unique(conn, SALES_DATA)


@dg.asset_check(
    asset=SALES_ASSET,
    blocking=True,
    description="No data lost: up to the highest rowid loaded, the source's row count and highest rowid equal "
    "bronze's. If it fails, a row is missing from bronze (or was deleted at the source). About the whole table by "
    "nature: bronze's count is read from the rowid index (an index-only scan).",
)
def softcart_sales_data_no_data_lost(warehouse: PostgresWarehouse, softcart_source: OdbcSource) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        ensure_bronze_objects(conn, SALES_DATA)
        bronze_rows, bronze_max = conn.execute(
            sql.SQL("select count(*), coalesce(max({}), 0) from {}").format(sql.Identifier(ROWID), SALES_DATA.ident)
        ).fetchone()
    rowid = quote_ident(ROWID, softcart_source.dialect)
    table = quote_table(SALES_SOURCE_TABLE, softcart_source.dialect)
    where = f"FROM {table} WHERE {rowid} <= ?"
    source_rows = softcart_source.scalar(f"SELECT COUNT(*) {where}", [bronze_max])
    source_max = softcart_source.scalar(f"SELECT COALESCE(MAX({rowid}), 0) {where}", [bronze_max])
    missing = source_rows - bronze_rows
    return dg.AssetCheckResult(
        passed=source_rows == bronze_rows and source_max == bronze_max,
        metadata={
            "high_water_rowid": bronze_max,
            "source_rows": source_rows,
            "bronze_rows": bronze_rows,
            "source_max_rowid": source_max,
            "rows_missing_in_bronze": missing,
        },
        description=None if missing == 0 else f"{missing:,} source rows up to rowid {bronze_max:,} are not in bronze",
    )


def _weblog_scope(context: dg.AssetCheckExecutionContext, conn) -> str | None:
    if context.has_partition_key:
        return context.partition_key
    row = conn.execute(
        "select partition_key from bronze.batch_ledger where target_table = %s and status = 'succeeded'"
        " order by finished_at desc limit 1",
        (WEB_ACCESS_LOG.qualified_name,),
    ).fetchone()
    return row[0] if row else None


@dg.asset_check(asset=WEB_ASSET, blocking=True, description="No line is empty in every field.")
def web_access_log_no_all_null_rows(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse, softcart_weblogs: LandingZone
) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        ensure_bronze_objects(conn, WEB_ACCESS_LOG)
        key = _weblog_scope(context, conn)
        scope = file_scope(source_file(softcart_weblogs.landing(), key), key) if key else None
        return bronze_checks.no_all_null_rows(conn, WEB_ACCESS_LOG, scope, ignore=("line_number",))


@dg.asset_check(
    asset=WEB_ASSET,
    blocking=True,
    description="Lines loaded + lines quarantined = the lines of the file, recounted from storage (incoming/ or the archive).",
)
def web_access_log_lines_reconcile_with_file(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse, softcart_weblogs: LandingZone
) -> dg.AssetCheckResult:
    zone = softcart_weblogs.landing()
    with warehouse.connect() as conn:
        ensure_bronze_objects(conn, WEB_ACCESS_LOG)
        key = _weblog_scope(context, conn)
        if key is None:
            return dg.AssetCheckResult(passed=True, metadata={"scope": "nothing loaded yet"})
        source = source_file(zone, key)
        loaded = conn.execute(
            sql.SQL("select count(*) from {} where _bronze_source_file = %s").format(WEB_ACCESS_LOG.ident), (source,)
        ).fetchone()[0]
        quarantined = conn.execute(
            sql.SQL("select count(*) from {} where source_file = %s").format(QUARANTINE), (source,)
        ).fetchone()[0]
    located = locate_log(zone, key)
    if located is None:
        return dg.AssetCheckResult(passed=False, metadata={"file": key, "problem": "file not found in storage"})
    lines = count_lines(log_chunks(zone, located))
    return dg.AssetCheckResult(
        passed=loaded + quarantined == lines,
        metadata={"file": located.uri, "lines_loaded": loaded, "lines_quarantined": quarantined, "lines": lines},
    )


@dg.asset_check(
    asset=WEB_ASSET,
    blocking=False,
    description="No access log has waited in incoming/ longer than DW_SOFTCART_MAX_WAIT_MINUTES (default 60): a "
    "file that stays there was never loaded (sensor stopped, runs failing or queued behind others).",
)
def web_access_log_incoming_not_stale(softcart_weblogs: LandingZone) -> dg.AssetCheckResult:
    max_wait = timedelta(minutes=float(os.environ.get("DW_SOFTCART_MAX_WAIT_MINUTES", "60")))
    return bronze_checks.files_not_waiting(softcart_weblogs.landing().list(INCOMING), max_wait)


@dg.asset_check(
    asset=WEB_ASSET,
    blocking=False,
    description="No access log was refused in the last 24 hours for holding the same bytes as a file loaded before "
    "(a source that sent a file twice under two names; the refused file is in failed/ with its report).",
)
def web_access_log_no_identical_files(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        return bronze_checks.no_identical_files(conn, WEB_ACCESS_LOG)
