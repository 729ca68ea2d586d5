"""At 03:00 UTC, load the previous arrival day of the video landing zone (starts stopped); every 15
minutes, check the landing zone (runs by default)."""

import dagster as dg

from dw_platform.defs.video.jobs import video_daily_job, video_landing_watch_job

video_daily_schedule = dg.build_schedule_from_partitioned_job(
    video_daily_job,
    hour_of_day=3,
    description="At 03:00 UTC, runs video_daily for the previous arrival day (its three files, then silver and gold). "
    "Starts stopped: switch it on here. A day whose files are missing fails its file checks; land them "
    "(`dw drop video FILE` for today) and re-run the partition.",
)

video_landing_watch_schedule = dg.ScheduleDefinition(
    job=video_landing_watch_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs the video landing zone's checks: files waiting too long without being loaded, files refused "
    "as identical to one loaded for another day.",
)
