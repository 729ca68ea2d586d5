"""The SoftCart jobs: the hourly sync of the shop database, and one run per access-log file."""

import dagster as dg

from dw_platform.defs.softcart.checks import web_access_log_incoming_not_stale, web_access_log_no_identical_files
from dw_platform.defs.softcart.partitions import weblog_files

WATCH_CHECKS = dg.AssetSelection.checks(web_access_log_incoming_not_stale, web_access_log_no_identical_files)

BRONZE_TABLES = [
    dg.AssetKey(["bronze", name]) for name in ("softcart_sales_data", "softcart_products", "softcart_customers")
]
# dbt seeds with the reference lists the star schema's dimensions are built from.
REFERENCE_SEEDS = [dg.AssetKey(["silver", name]) for name in ("softcart_categories", "softcart_countries")]

softcart_sync_job = dg.define_asset_job(
    name="softcart_sync",
    selection=dg.AssetSelection.assets(*BRONZE_TABLES, *REFERENCE_SEEDS).downstream()
    - dg.AssetSelection.assets(dg.AssetKey(["bronze", "web_access_log"])).downstream(),
    description="New sales_data rows (by rowid) and the reference tables into bronze, then the star schema.",
    # Loads are exactly-once (a re-run adds only what is missing), so retrying is safe.
    op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)

softcart_weblogs_job = dg.define_asset_job(
    name="softcart_weblogs",
    selection=dg.AssetSelection.assets(
        dg.AssetKey(["bronze", "web_access_log"]), dg.AssetKey(["silver", "softcart_bot_agents"])
    ).downstream()
    - WATCH_CHECKS,
    partitions_def=weblog_files,
    description="One access-log file into bronze (bad lines quarantined), archived, then the traffic models.",
    op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)

softcart_weblogs_watch_job = dg.define_asset_job(
    name="softcart_weblogs_watch",
    selection=WATCH_CHECKS,
    description="Check the weblogs landing zone: no file waiting in incoming/ too long, no file refused as identical "
    "to one loaded before.",
)
