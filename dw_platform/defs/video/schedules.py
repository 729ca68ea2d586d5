"""At 03:00 UTC, load every arrival day of the video landing zone not loaded yet (starts stopped);
every 15 minutes, check the landing zone (runs by default)."""

import dagster as dg

from dw_platform.defs.video.jobs import VIDEO_BRONZE, video_daily_job, video_landing_watch_job
from dw_platform.lib.catch_up import catch_up_schedule

video_daily_schedule = catch_up_schedule(
    video_daily_job,
    VIDEO_BRONZE,
    name="video_daily_schedule",
    cron_schedule="0 3 * * *",
    description="At 03:00 UTC, runs video_daily once for every arrival day up to yesterday whose bronze files are not "
    "loaded or failed (normally yesterday; after an outage, every day missed, as one range run). Starts stopped: "
    "switch it on here. A day whose files are missing fails its file checks; land them (`dw drop video FILE` for "
    "today) and the next tick loads it.",
)

video_landing_watch_schedule = dg.ScheduleDefinition(
    job=video_landing_watch_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs the video landing zone's checks: files waiting too long without being loaded, files refused "
    "as identical to one loaded for another day.",
)
