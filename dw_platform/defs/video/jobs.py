"""The video domain's job: one arrival day's bronze files, then the dbt models built on them."""

import dagster as dg

from dw_platform.defs.video.checks import WATCH_CHECKS
from dw_platform.defs.video.partitions import video_daily
from dw_platform.lib.dbt import with_seeds

VIDEO_BRONZE = [dg.AssetKey(["bronze", n]) for n in ("video_users", "video_viewing_sessions", "content")]

video_daily_job = dg.define_asset_job(
    name="video_daily",
    # The day's bronze, what is built on it, and the reference seeds that reads.
    selection=with_seeds(dg.AssetSelection.assets(*VIDEO_BRONZE).required_multi_asset_neighbors().downstream())
    - dg.AssetSelection.checks(*WATCH_CHECKS),
    partitions_def=video_daily,
    description="Load one arrival day (or a range, as one run) of users, viewing sessions and content metadata "
    "into bronze, then the video silver models for that window (partitioned like bronze: the users, sessions and "
    "content items of its days are rebuilt), the gold built on what they changed, and their dbt tests.",
    # A day's load replaces itself, so retrying is safe; bad files and failing dbt tests are not retried.
    op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
)

video_landing_watch_job = dg.define_asset_job(
    name="video_landing_watch",
    selection=dg.AssetSelection.checks(*WATCH_CHECKS),
    description="Check the video landing zone: no file waiting too long without being loaded, no file refused as "
    "identical to one loaded for another day.",
)
