"""Every 15 minutes, check that no sales blob waits in incoming/ too long (runs by default)."""

import dagster as dg

from dw_platform.defs.sales.jobs import sales_incoming_watch_job

sales_incoming_watch_schedule = dg.ScheduleDefinition(
    job=sales_incoming_watch_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs the check sales_incoming_not_stale: blobs waiting in incoming/ longer than the threshold.",
)
