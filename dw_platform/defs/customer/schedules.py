"""The customer domain's daily job: yesterday's bronze partition, then everything dbt builds on it."""

import dagster as dg

from dw_platform.defs.customer.partitions import customer_daily
from dw_platform.lib.dbt import with_seeds

customer_daily_job = dg.define_asset_job(
    name="customer_daily",
    # Bronze, what is built on it, and the reference seeds that reads.
    selection=with_seeds(dg.AssetSelection.assets(dg.AssetKey(["bronze", "customer_profile_raw"])).downstream()),
    partitions_def=customer_daily,
    description="Load one day (or a range, as one run) of customer profiles, then silver and gold.",
    # Steps are idempotent (a partition replaces itself), so retrying them is safe.
    op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)

# At 02:00 UTC, build the previous day's partition.
customer_daily_schedule = dg.build_schedule_from_partitioned_job(
    customer_daily_job,
    hour_of_day=2,
    description="At 02:00 UTC, runs customer_daily for the previous day (bronze, silver, gold, all checks). Starts "
    "stopped: switch it on here. A missed day is not caught up: backfill it from the job's Partitions tab.",
)
