"""The sales domain's jobs: one blob's bronze partition with the dbt models built on it, and the
watch over incoming/ (run by its schedule)."""

import dagster as dg

from dw_platform.defs.sales.checks import sales_incoming_not_stale, sales_no_identical_files
from dw_platform.defs.sales.partitions import sales_blobs

sales_ingest_job = dg.define_asset_job(
    name="sales_ingest",
    selection=dg.AssetSelection.assets(dg.AssetKey(["bronze", "sales"])).downstream()
    - dg.AssetSelection.checks(sales_incoming_not_stale, sales_no_identical_files),
    partitions_def=sales_blobs,
    description="Ingest one sales CSV blob into bronze.sales (bad rows quarantined), then silver and gold.",
    # A blob's load replaces itself, so retrying is safe; bad files fail with allow_retries=False.
    op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)

sales_incoming_watch_job = dg.define_asset_job(
    name="sales_incoming_watch",
    selection=dg.AssetSelection.checks(sales_incoming_not_stale, sales_no_identical_files),
    description="Check that no blob has waited in incoming/ longer than DW_SALES_MAX_WAIT_MINUTES, and that no "
    "blob was refused as identical to one loaded before.",
)
