"""The replication domain's sensors, per source:

- `replication_cdc_<source>` (starts stopped; every 10 s): requests a run of the capture+apply job
  when the slot holds changes or the event log holds unapplied events a table can take, never
  while a run of that job is queued or running, nor while the slot is unusable (missing,
  invalidated, moved behind the platform's back: the skip reason says how to re-seed). A run
  carries the state it was requested for (tag `dw/cdc_state`: a digest of the slot's confirmed
  position, the consumer offsets and the tables' load states) and its run key is
  `<source>@<confirmed LSN>|<digest>`, so one state launches one run. When the latest run of a
  state ended without success (failed, canceled: say killed before it moved anything, its run
  retries too) and Dagster will not retry it, the state is requested again as `<key>#<attempt>`,
  RETRY_AFTER_S after that run ended, doubling per attempt up to MAX_RETRY_AFTER_S. A state whose
  run succeeded and left it as it was (events waiting for a table that is not loaded) waits for
  something to change.
- `replication_slot_watch_<source>` (running; every 60 s): posts to the alert webhook, once per
  episode and again when it is over, when the slot is unusable, when changes are stalled (one
  waits longer than `stall_alert_minutes` while nothing is captured or applied, whatever their
  size), or when the slot is more than `lag_alert_mb` behind without moving for
  `stall_alert_minutes`; and reports the check `changes_not_stalled` whenever its outcome changes.
  Run failures are posted by the domain-wide run-failure sensor (`defs/alerts`).
"""

import hashlib
import json
import time

import dagster as dg
import psycopg

from dw_platform.defs.replication.checks import NOT_STALLED, not_stalled
from dw_platform.defs.replication.jobs import CDC_TAG
from dw_platform.defs.replication.partitions import cdc_events_key
from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.lib.runs import ENDED_UNFINISHED, IN_PROGRESS, WILL_RETRY_TAG
from dw_platform.lib.webhook import AlertWebhook
from dw_platform.replication.health import Assessment, assess
from dw_platform.replication.sources import ConfigError, SourceConfig, load_sources

STATE_TAG = "dw/cdc_state"
RETRY_AFTER_S = 30.0
MAX_RETRY_AFTER_S = 600.0


def build_cdc_sensor(source: SourceConfig) -> dg.SensorDefinition:
    job_name = f"replication_cdc_{source.name}"

    @dg.sensor(
        name=job_name,
        job_name=job_name,
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Runs {job_name} when {source.name}'s slot or event log has changes to apply.",
    )
    def cdc_sensor(context: dg.SensorEvaluationContext, lakehouse: Lakehouse):
        return evaluate(context, source, lakehouse)

    return cdc_sensor


def state_digest(found: Assessment) -> str:
    """What a run would start from: the slot's position, the consumer offsets, the tables' loads."""
    tables = sorted((k, s.get("status"), s.get("start_lsn")) for k, s in found.statuses.items())
    body = json.dumps([found.slot.confirmed_lsn, sorted(found.applied.items()), tables])
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def evaluate(
    context: dg.SensorEvaluationContext,
    source: SourceConfig,
    lakehouse: Lakehouse,
    retry_after_s: float = RETRY_AFTER_S,
):
    job_name = f"replication_cdc_{source.name}"
    running = context.instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=IN_PROGRESS), limit=1)
    if running:
        return dg.SkipReason(f"run {running[0].run_id} of {job_name} is in progress")
    try:
        found = assess(source, lakehouse)
    except ConfigError as exc:  # no source configured
        return dg.SkipReason(str(exc))
    except psycopg.Error as exc:
        return dg.SkipReason(f"cannot read the slot: {' '.join(str(exc).split())}")
    if found.problem:
        return dg.SkipReason(found.problem)
    if found.slot is None:
        return dg.SkipReason(
            f"replication slot {source.slot!r} does not exist yet: bulk-load the source first (it creates the slot)"
        )
    if not found.pending:
        return dg.SkipReason(f"nothing to capture or apply (slot at {found.slot.confirmed_lsn})")
    state = state_digest(found)
    key = f"{source.name}@{found.slot.confirmed_lsn}|{state}"
    tags = {CDC_TAG: source.name, STATE_TAG: state}
    runs = dg.RunsFilter(job_name=job_name, tags={STATE_TAG: state})
    latest = next(iter(context.instance.get_run_records(runs, limit=1)), None)
    if latest is None:
        return dg.RunRequest(run_key=key, tags=tags)
    run = latest.dagster_run
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return dg.SkipReason(
            f"run {run.run_id} started from this state and left it as it was: what waits is for tables "
            "that are not loaded (see _cdc_status)"
        )
    if run.status not in ENDED_UNFINISHED or run.tags.get(WILL_RETRY_TAG) == "true":
        return dg.SkipReason(f"run {run.run_id} for this state is {run.status.value}: Dagster goes on with it")
    attempts = context.instance.get_runs_count(runs)
    wait = min(retry_after_s * 2 ** (attempts - 1), MAX_RETRY_AFTER_S)
    waited = time.time() - (latest.end_time or 0)
    if waited < wait:
        return dg.SkipReason(
            f"run {run.run_id} ended {run.status.value} without moving anything; "
            f"requesting the changes again in {wait - waited:.0f} s (attempt {attempts + 1})"
        )
    context.log.warning(
        f"{attempts} run(s) from slot position {found.slot.confirmed_lsn} ended without moving anything; "
        f"requesting attempt {attempts + 1}"
    )
    return dg.RunRequest(run_key=f"{key}#{attempts + 1}", tags=tags)


def build_slot_watch(source: SourceConfig) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"replication_slot_watch_{source.name}",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Alerts through the webhook when {source.name}'s replication slot is unusable or its changes are "
            "stalled; reports the check changes_not_stalled."
        ),
    )
    def slot_watch(context: dg.SensorEvaluationContext, lakehouse: Lakehouse, alert_webhook: AlertWebhook):
        return watch(context, source, lakehouse, alert_webhook)

    return slot_watch


def watch(
    context: dg.SensorEvaluationContext,
    source: SourceConfig,
    lakehouse: Lakehouse,
    webhook: AlertWebhook,
    clock=time.time,
):
    """One look at the source's change capture; the cursor (JSON) remembers the slot's position
    and since when, whether an alert went out for the current episode, and the check's outcome."""

    seen = json.loads(context.cursor) if context.cursor else {}
    try:
        found = assess(source, lakehouse)
    except (ConfigError, psycopg.Error) as exc:
        return dg.SkipReason(f"slot not readable: {' '.join(str(exc).split())}")
    stamp = clock()
    confirmed = found.slot.confirmed_lsn if found.slot else None
    since = seen.get("since", stamp) if seen.get("confirmed") == confirmed else stamp
    problem = found.problem or found.stall()
    if problem is None and found.slot and found.slot.lag_bytes > source.lag_alert_mb << 20:
        if stamp - since >= source.stall_alert_minutes * 60:
            problem = (
                f"replication slot `{source.slot}` of `{source.name}` is stalled: {found.slot.lag_bytes:,} bytes "
                f"behind and its position {confirmed} has not moved for {(stamp - since) / 60:.0f} min "
                f"(is the sensor replication_cdc_{source.name} running? did its runs fail?)"
            )
    alerted = seen.get("alerted", False)
    text = None
    if problem and not alerted:
        text, alerted = f":warning: dw_platform: {problem}", True
    elif not problem and alerted:
        lag = f"{found.slot.lag_bytes:,} bytes behind" if found.slot else "no slot"
        text, alerted = (
            f":white_check_mark: dw_platform: change capture of `{source.name}` is moving again ({lag})",
            False,
        )
    if text:
        context.log.warning(text)
        if webhook.configured:
            try:
                webhook.post(text)
            except OSError as exc:  # try again at the next tick
                context.log.error(f"could not post to the alert webhook: {exc}")
                alerted = seen.get("alerted", False)
    passed, metadata = not_stalled(found)
    events = []
    if passed != seen.get("check"):
        events.append(
            dg.AssetCheckEvaluation(
                asset_key=cdc_events_key(source.name), check_name=NOT_STALLED, passed=passed, metadata=metadata
            )
        )
    cursor = json.dumps({"confirmed": confirmed, "since": since, "alerted": alerted, "check": passed})
    reason = problem or (f"slot at {confirmed}, {found.slot.lag_bytes:,} bytes behind" if found.slot else "no slot yet")
    return dg.SensorResult(skip_reason=reason, cursor=cursor, asset_events=events)


@dg.definitions
def sensors() -> dg.Definitions:
    sources = load_sources().values()
    return dg.Definitions(sensors=[*(build_cdc_sensor(s) for s in sources), *(build_slot_watch(s) for s in sources)])
