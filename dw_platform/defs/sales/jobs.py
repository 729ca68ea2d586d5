"""The sales domain's job: one blob's bronze partition, then the dbt models built on it."""

import dagster as dg

from dw_platform.defs.sales.partitions import sales_blobs

sales_ingest_job = dg.define_asset_job(
    name="sales_ingest",
    selection=dg.AssetSelection.assets(dg.AssetKey(["bronze", "sales"])).downstream(),
    partitions_def=sales_blobs,
    description="Ingest one sales CSV blob into bronze.sales (bad rows quarantined), then silver and gold.",
    # A blob's load replaces itself, so retrying is safe; bad files fail with allow_retries=False.
    op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)
