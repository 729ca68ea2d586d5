"""The customer domain's daily job and its catch-up schedule."""

import dagster as dg

from dw_platform.defs.customer.partitions import customer_daily
from dw_platform.lib.catch_up import catch_up_schedule
from dw_platform.lib.dbt import with_seeds

BRONZE = dg.AssetKey(["bronze", "customer_profile_raw"])
SILVER = dg.AssetKey(["silver", "customer_profile_standardized"])

customer_daily_job = dg.define_asset_job(
    name="customer_daily",
    # Bronze, what is built on it, and the reference seeds that reads.
    selection=with_seeds(dg.AssetSelection.assets(BRONZE).downstream()),
    partitions_def=customer_daily,
    description="Load one day (or a range, as one run) of customer profiles, then silver and gold.",
    # Steps are idempotent (a partition replaces itself), so retrying them is safe.
    op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)

# At 02:00 UTC, one run for every day not built yet: yesterday, and any day missed or failed.
customer_daily_schedule = catch_up_schedule(
    customer_daily_job,
    [BRONZE, SILVER],
    name="customer_daily_schedule",
    cron_schedule="0 2 * * *",
    description="At 02:00 UTC, runs customer_daily once for every day up to yesterday whose bronze or silver "
    "partition is missing or failed (normally yesterday; after an outage, every day missed, as one range run). "
    "Starts stopped: switch it on here.",
)
