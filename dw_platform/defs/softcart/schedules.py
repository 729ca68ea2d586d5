import dagster as dg

from dw_platform.defs.softcart.jobs import softcart_sync_job, softcart_weblogs_watch_job

softcart_sync_schedule = dg.ScheduleDefinition(
    name="softcart_sync_schedule",
    job=softcart_sync_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every hour on the hour (UTC), runs softcart_sync: new sales rows and the reference tables into "
    "bronze, then the star schema. Starts stopped: switch it on here. A missed hour needs no catch-up: "
    "the next run loads every row not loaded yet.",
)

softcart_weblogs_watch_schedule = dg.ScheduleDefinition(
    job=softcart_weblogs_watch_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs the weblogs landing zone's checks: files waiting in incoming/ longer than the threshold, "
    "files refused as identical to one loaded before.",
)
