"""The __domain__ domain's daily job: one arrival day's bronze, then the dbt models built on it."""

import dagster as dg

from dw_platform.defs.__domain__.partitions import DAILY
from dw_platform.lib.dbt import with_seeds

__domain___daily_job = dg.define_asset_job(
    name="__domain___daily",
    # The day's bronze, what is built on it, and the reference seeds that reads.
    selection=with_seeds(dg.AssetSelection.assets(dg.AssetKey(["bronze", "__domain___events"])).downstream()),
    partitions_def=DAILY,
    description="Load one arrival day of __domain__.csv into bronze, then the __domain__ silver and gold models "
    "(rebuilt from all days) and their dbt tests.",
    # A day's load replaces itself, so retrying is safe; bad files and failing dbt tests are not retried.
    op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)
