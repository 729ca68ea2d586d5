"""Watch `incoming/` in the weblogs landing zone: each new or changed access-log file is one
partition and one run of `softcart_weblogs`.

Replay-safe like the sales sensor: the cursor (JSON, stored by Dagster) is
{"launched": {file: version}} for the files still in `incoming/` whose current version has been
requested; run keys are `<file>@<version>`, so the same version never runs twice and a re-upload
runs again. Files leave `incoming/` when their run archives them (or files them in failed/), and
their entries are dropped. A requested version still there whose run ended without loading it (an
outage outlasting the retries, a killed run) is requested again, as the sales sensor does
(`dw_platform.lib.runs.stranded`).
"""

import json
import time

import dagster as dg

from dw_platform.defs.softcart.partitions import INCOMING, weblog_files
from dw_platform.lib.landing import Landing, LandingZone
from dw_platform.lib.runs import RETRY_AFTER_S, stranded

JOB = "softcart_weblogs"
MAX_RUNS_PER_TICK = 500
TIME_BUDGET_S = 30.0
VERSION_TAG = "dw/landed_version"


def valid_partition_key(key: str) -> bool:
    return bool(key) and "..." not in key and not any(ord(c) < 32 for c in key) and not key.endswith("/")


@dg.sensor(
    name="softcart_weblogs_sensor",
    job_name=JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One run per new or changed access-log file under incoming/ in the weblogs landing zone.",
)
def softcart_weblogs_sensor(context: dg.SensorEvaluationContext, softcart_weblogs: LandingZone) -> dg.SensorResult:
    return scan_weblogs(context, softcart_weblogs.landing())


def scan_weblogs(
    context: dg.SensorEvaluationContext,
    zone: Landing,
    max_runs: int = MAX_RUNS_PER_TICK,
    time_budget_s: float = TIME_BUDGET_S,
    retry_after_s: float = RETRY_AFTER_S,
) -> dg.SensorResult:
    launched: dict[str, str] = json.loads(context.cursor)["launched"] if context.cursor else {}
    deadline = time.monotonic() + time_budget_s
    known = set(context.instance.get_dynamic_partitions(weblog_files.name))
    seen: set[str] = set()
    requests: list[dg.RunRequest] = []
    new_keys: list[str] = []
    waiting: dict[str, str] = {}
    complete = True
    for file in zone.list(INCOMING):
        if len(requests) >= max_runs or time.monotonic() > deadline:
            complete = False
            break
        key = file.path[len(INCOMING) :]
        seen.add(key)
        if launched.get(key) == file.version:
            waiting[key] = file.version
            continue
        if not valid_partition_key(key):
            context.log.warning(f"skipping {file.path!r}: its name cannot be a partition key")
            continue
        if key not in known:
            new_keys.append(key)
            known.add(key)
        requests.append(
            dg.RunRequest(run_key=f"{key}@{file.version}", partition_key=key, tags={VERSION_TAG: file.version})
        )
        launched[key] = file.version
    requests += stranded(
        context.instance,
        JOB,
        waiting,
        VERSION_TAG,
        lambda key, version: getattr(zone.find(INCOMING + key), "version", None) == version,
        max_runs - len(requests),
        retry_after_s,
    )
    if complete:  # forget files that left incoming/ (archived); a partial listing proves nothing
        launched = {k: v for k, v in launched.items() if k in seen}
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps({"launched": launched}, sort_keys=True, separators=(",", ":")),
        dynamic_partitions_requests=[weblog_files.build_add_request(new_keys)] if new_keys else [],
    )
