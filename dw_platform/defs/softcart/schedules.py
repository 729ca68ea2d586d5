import dagster as dg

from dw_platform.defs.softcart.jobs import softcart_sync_job

# Every hour on the hour: new sales rows, the reference tables, then the star schema. Starts stopped.
softcart_sync_schedule = dg.ScheduleDefinition(
    name="softcart_sync_schedule", job=softcart_sync_job, cron_schedule="0 * * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
