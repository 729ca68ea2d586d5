"""Watch `incoming/` in the sales container: every new or changed blob is one partition and one run.
The cursor is JSON: {"launched": {blob name: etag}} for the blobs still in `incoming/` whose
current version has been requested. Dagster stores it with the sensor, so it survives restarts.
A blob version is requested once: its run key is `<name>@<etag>` (the instance also skips a run
key it has seen), and a re-upload (new etag) is requested again. Entries of blobs that left
`incoming/` are dropped, so the cursor stays as small as the backlog.

Thousands of blobs per tick: the listing is paged and stops after `TIME_BUDGET_S`; at most
`MAX_RUNS_PER_TICK` runs are requested per tick. What is left is requested on the next tick.
"""


import json
import time

import dagster as dg

from dw_platform.defs.sales.partitions import INCOMING, sales_blobs
from dw_platform.lib.blob import BlobStorage

MAX_RUNS_PER_TICK = 1000
TIME_BUDGET_S = 30.0
ETAG_TAG = "dw/blob_etag"


def run_key(name: str, etag: str) -> str:
    return f"{name}@{etag}"


def load_cursor(cursor: str | None) -> dict[str, str]:
    return dict(json.loads(cursor)["launched"]) if cursor else {}


def dump_cursor(launched: dict[str, str]) -> str:
    return json.dumps({"launched": launched}, sort_keys=True, separators=(",", ":"))


def valid_partition_key(key: str) -> bool:
    return bool(key) and "..." not in key and not any(ord(c) < 32 for c in key)


@dg.sensor(
    name="sales_incoming_sensor",
    job_name="sales_ingest",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One run per new or changed blob under incoming/ in the sales container.",
)
def sales_incoming_sensor(context: dg.SensorEvaluationContext, sales_storage: BlobStorage) -> dg.SensorResult:
    return scan(context, sales_storage)


def scan(
    context: dg.SensorEvaluationContext,
    storage: BlobStorage,
    max_runs: int = MAX_RUNS_PER_TICK,
    time_budget_s: float = TIME_BUDGET_S,
) -> dg.SensorResult:
    launched = load_cursor(context.cursor)
    deadline = time.monotonic() + time_budget_s
    storage.ensure_container()
    seen: set[str] = set()
    requests: list[dg.RunRequest] = []
    new_keys: list[str] = []
    known = set(context.instance.get_dynamic_partitions(sales_blobs.name))
    last_listed: str | None = None
    complete = True
    for blob in storage.list(INCOMING):
        if len(requests) >= max_runs or time.monotonic() > deadline:
            complete = False
            break
        last_listed = blob.name
        key = blob.name[len(INCOMING):]
        seen.add(key)
        if launched.get(key) == blob.etag:
            continue
        if not valid_partition_key(key):
            context.log.warning(f"skipping blob {blob.name!r}: its name cannot be a partition key")
            continue
        if key not in known:
            new_keys.append(key)
            known.add(key)
        requests.append(
            dg.RunRequest(run_key=run_key(key, blob.etag), partition_key=key, tags={ETAG_TAG: blob.etag})
        )
        launched[key] = blob.etag
    # Forget blobs that left incoming/ (listed in name order: everything up to the last name
    # listed has been seen, if it is still there).
    bound = None if complete else (last_listed[len(INCOMING):] if last_listed else "")
    for key in [k for k in launched if k not in seen and (bound is None or k <= bound)]:
        del launched[key]
    if requests:
        context.log.info(f"{len(requests)} blob version(s) to ingest, {len(new_keys)} new partition(s)")
    return dg.SensorResult(
        run_requests=requests,
        cursor=dump_cursor(launched),
        dynamic_partitions_requests=[sales_blobs.build_add_request(new_keys)] if new_keys else [],
    )
