"""Every 15 minutes, check the sales container: no blob waiting in incoming/ too long, none refused as
identical to one loaded before (runs by default)."""

import dagster as dg

from dw_platform.defs.sales.jobs import sales_incoming_watch_job

sales_incoming_watch_schedule = dg.ScheduleDefinition(
    job=sales_incoming_watch_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs the checks sales_incoming_not_stale (blobs waiting in incoming/ longer than the threshold) "
    "and sales_no_identical_files (blobs refused as identical to one loaded before).",
)
