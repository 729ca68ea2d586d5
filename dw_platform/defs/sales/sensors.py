"""Watch `incoming/` in the sales container: every new or changed blob is one partition and one
run, and a blob whose run ended without loading it is requested again.

The cursor is JSON: {"launched": {partition key: etag}} for the blobs still in `incoming/` whose
current version has been requested. Dagster stores it with the sensor, so it survives restarts.
A blob version is requested once: its run key is `<key>@<etag>` (the instance also skips a run
key it has seen), and a re-upload (new etag) is requested again. Entries of blobs that left
`incoming/` are dropped, so the cursor stays as small as the backlog.

A blob leaves `incoming/` only when its run loaded it (to `processed/`) or found it bad (to
`failed/`). A requested version still there whose latest run ended otherwise — failed on a storage
or warehouse outage after its retries, killed and marked failed by run monitoring, canceled — and
that Dagster's run retries will not re-execute, is requested again with run key
`<key>@<etag>#<attempt>`, `RETRY_AFTER_S` after that run ended, doubling per attempt up to an
hour (`dw_platform.lib.runs.stranded`). Folder markers (names ending in `/`) are not files and are left alone.

Thousands of blobs per tick: the listing is paged and stops after `TIME_BUDGET_S`; at most
`MAX_RUNS_PER_TICK` runs are requested per tick. What is left is requested on the next tick.
"""

import json
import time

import dagster as dg

from dw_platform.defs.sales.partitions import INCOMING, blob_path, partition_key, sales_blobs
from dw_platform.lib.blob import BlobStorage
from dw_platform.lib.runs import RETRY_AFTER_S, stranded

JOB = "sales_ingest"
# The sensor ticks on every loop of Dagster's sensor daemon, which loops every 5 s: 4, not 5, as
# a 5 s minimum measured against the daemon's jitter skips every other loop (10 s). A dropped file
# waits 2.5 s on average before its run is requested. An idle tick is one listing of incoming/
# (one request while it holds under 5,000 blobs) and logs nothing; the daemon keeps such skipped
# ticks a day (dagster.yaml `retention`).
INTERVAL_S = 4
MAX_RUNS_PER_TICK = 1000
TIME_BUDGET_S = 30.0
ETAG_TAG = "dw/blob_etag"


def run_key(key: str, etag: str) -> str:
    return f"{key}@{etag}"


def load_cursor(cursor: str | None) -> dict[str, str]:
    return dict(json.loads(cursor)["launched"]) if cursor else {}


def dump_cursor(launched: dict[str, str]) -> str:
    return json.dumps({"launched": launched}, sort_keys=True, separators=(",", ":"))


@dg.sensor(
    name="sales_incoming_sensor",
    job_name=JOB,
    minimum_interval_seconds=INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One run per new or changed blob under incoming/ in the sales container; a blob whose run "
    "ended without loading it is requested again.",
)
def sales_incoming_sensor(context: dg.SensorEvaluationContext, sales_storage: BlobStorage) -> dg.SensorResult:
    return scan(context, sales_storage)


def scan(
    context: dg.SensorEvaluationContext,
    storage: BlobStorage,
    max_runs: int = MAX_RUNS_PER_TICK,
    time_budget_s: float = TIME_BUDGET_S,
    retry_after_s: float = RETRY_AFTER_S,
) -> dg.SensorResult:
    launched = load_cursor(context.cursor)
    deadline = time.monotonic() + time_budget_s
    seen: set[str] = set()
    waiting: dict[str, str] = {}
    requests: list[dg.RunRequest] = []
    new_keys: list[str] = []
    known: set[str] | None = None  # the partitions, read only when a blob not requested before is listed
    last_listed: str | None = None
    complete = True
    for blob in storage.list(INCOMING):
        if len(requests) >= max_runs or time.monotonic() > deadline:
            complete = False
            break
        last_listed = blob.name
        if blob.name.endswith("/"):
            continue
        key = partition_key(blob.name[len(INCOMING) :])
        seen.add(key)
        if launched.get(key) == blob.etag:
            waiting[key] = blob.etag
            continue
        if known is None:
            known = set(context.instance.get_dynamic_partitions(sales_blobs.name))
        if key not in known:
            new_keys.append(key)
            known.add(key)
        requests.append(dg.RunRequest(run_key=run_key(key, blob.etag), partition_key=key, tags={ETAG_TAG: blob.etag}))
        launched[key] = blob.etag
    first = len(requests)
    requests += stranded(
        context.instance,
        JOB,
        waiting,
        ETAG_TAG,
        lambda key, etag: getattr(storage.version(INCOMING + blob_path(key)), "etag", None) == etag,
        max_runs - len(requests),
        retry_after_s,
    )
    # Forget blobs that left incoming/ (listed in name order: everything up to the last name
    # listed has been seen, if it is still there).
    bound = None if complete else (last_listed[len(INCOMING) :] if last_listed else "")
    for key in [k for k in launched if k not in seen and (bound is None or blob_path(k) <= bound)]:
        del launched[key]
    if requests:
        again = [r.partition_key for r in requests[first:]]
        context.log.info(
            f"{first} blob version(s) to ingest, {len(new_keys)} new partition(s)"
            + (f"; requested again after their runs ended without loading them: {', '.join(again)}" if again else "")
        )
    return dg.SensorResult(
        run_requests=requests,
        cursor=dump_cursor(launched),
        dynamic_partitions_requests=[sales_blobs.build_add_request(new_keys)] if new_keys else [],
    )
