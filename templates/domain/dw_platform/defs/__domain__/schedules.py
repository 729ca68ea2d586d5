"""At 04:00 UTC, load the previous arrival day of the __domain__ landing zone (starts stopped)."""

import dagster as dg

from dw_platform.defs.__domain__.jobs import __domain___daily_job

__domain___daily_schedule = dg.build_schedule_from_partitioned_job(
    __domain___daily_job,
    hour_of_day=4,
    description="At 04:00 UTC, runs __domain___daily for the previous arrival day (bronze, then silver and gold). "
    "Starts stopped: switch it on here. A day whose file is missing fails; land it and re-run the partition.",
)
