"""What the sensors ask of the runs Dagster holds."""

import time
from collections.abc import Callable

import dagster as dg

# A run in one of these has not ended: a sensor does not request its work again.
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

# A run that ended in one of these did not finish its work: a sensor may request it again, unless
# Dagster's run retries will (the tag below, "true", set on the failed run).
ENDED_UNFINISHED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
WILL_RETRY_TAG = "dagster/will_retry"
PARTITION_TAG = "dagster/partition"
RETRY_AFTER_S = 300.0
MAX_RETRY_AFTER_S = 3600.0


def stranded(
    instance: dg.DagsterInstance,
    job: str,
    waiting: dict[str, str],
    version_tag: str,
    still_there: Callable[[str, str], bool],
    limit: int,
    retry_after_s: float = RETRY_AFTER_S,
) -> list[dg.RunRequest]:
    """Run requests for work a sensor requested that is still waiting: `waiting` maps partition
    keys to the version requested (tagged `version_tag` on its runs). A partition is requested
    again when its latest run for that version ended without loading it (failed on an outage
    after its retries, killed and marked failed by run monitoring, canceled), Dagster's run
    retries will not re-execute it, `retry_after_s` has passed since it ended (doubling per
    attempt up to MAX_RETRY_AFTER_S), and `still_there(key, version)` says the work still waits
    (a file that failed for good has been moved away). Run key `<key>@<version>#<attempt>`."""
    if not waiting or limit <= 0:
        return []
    busy = {run.tags.get(PARTITION_TAG) for run in instance.get_runs(dg.RunsFilter(job_name=job, statuses=IN_PROGRESS))}
    requests = []
    for key, version in waiting.items():
        if key in busy:
            continue
        runs = dg.RunsFilter(job_name=job, tags={PARTITION_TAG: key, version_tag: version})
        latest = next(iter(instance.get_run_records(runs, limit=1)), None)
        if latest is None or latest.dagster_run.status not in ENDED_UNFINISHED:
            continue  # not run yet (the daemon creates it after the tick), or loaded
        if latest.dagster_run.tags.get(WILL_RETRY_TAG) == "true":
            continue
        attempts = instance.get_runs_count(runs)
        wait = min(retry_after_s * 2 ** (attempts - 1), MAX_RETRY_AFTER_S)
        if latest.end_time is not None and time.time() - latest.end_time < wait:
            continue
        if not still_there(key, version):
            continue  # finished (moved) or replaced since the listing
        requests.append(
            dg.RunRequest(run_key=f"{key}@{version}#{attempts + 1}", partition_key=key, tags={version_tag: version})
        )
        if len(requests) >= limit:
            break
    return requests
