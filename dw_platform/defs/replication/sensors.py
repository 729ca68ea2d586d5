"""The replication domain's sensors, per source:

- `replication_cdc_<source>` (starts stopped; every 10 s): requests a run of the capture+apply job
  when the slot holds changes or the event log holds unapplied events, never while a run of that
  job is queued or running. The run key is the slot's confirmed position with the log's consumer
  offsets, so one state launches one run (a failing state does not loop).
- `replication_slot_watch_<source>` (running; every 60 s): posts to the alert webhook when the slot
  is invalidated (WAL removed: re-seed) or stalled (lag over `lag_alert_mb` while its confirmed
  position has not moved for `stall_alert_minutes`), once per episode, and when it recovers.
  Run failures are posted by the domain-wide run-failure sensor (`defs/alerts`).
"""

import json
import time

import dagster as dg
import psycopg

from dw_platform.defs.replication.jobs import CDC_TAG
from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.lib.runs import IN_PROGRESS
from dw_platform.lib.webhook import AlertWebhook
from dw_platform.replication import eventlog
from dw_platform.replication.apply import consumer_offsets
from dw_platform.replication.capture import Capture
from dw_platform.replication.sources import ConfigError, SourceConfig, load_sources
from dw_platform.replication.status import ReplicationMeta


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


def evaluate(context: dg.SensorEvaluationContext, source: SourceConfig, lakehouse: Lakehouse):

    job_name = f"replication_cdc_{source.name}"
    running = context.instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=IN_PROGRESS), limit=1)
    if running:
        return dg.SkipReason(f"run {running[0].run_id} of {job_name} is in progress")
    capture = Capture(source, lakehouse)
    try:
        state = capture.slot_state()
        pending = state.lag_bytes > 0 and not state.active and capture.has_pending_changes()
    except (LookupError, ConfigError) as exc:  # no slot yet (no bulk load), or no source configured
        return dg.SkipReason(str(exc))
    except psycopg.Error as exc:
        return dg.SkipReason(f"cannot read the slot: {' '.join(str(exc).split())}")
    with lakehouse.connect() as conn:
        eventlog.ensure_log(conn)
        applied = consumer_offsets(ReplicationMeta(lakehouse, source.name), conn)
        waiting = eventlog.backlog(conn, source.name, applied)
    if not pending and not waiting:
        return dg.SkipReason(f"nothing to capture or apply (slot at {state.confirmed_lsn})")
    consumed = ",".join(f"{t}={o}" for t, o in sorted(applied.items()))
    return dg.RunRequest(run_key=f"{source.name}@{state.confirmed_lsn}|{consumed}", tags={CDC_TAG: source.name})


def build_slot_watch(source: SourceConfig) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"replication_slot_watch_{source.name}",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Alerts through the webhook when {source.name}'s replication slot is invalidated or stalled.",
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
    """One look at the slot; the cursor (JSON) remembers its position, since when, and whether an
    alert went out for the current episode."""

    seen = json.loads(context.cursor) if context.cursor else {}
    try:
        state = Capture(source, lakehouse).slot_state()
    except (LookupError, ConfigError, psycopg.Error) as exc:
        return dg.SkipReason(f"slot not readable: {' '.join(str(exc).split())}")
    stamp = clock()
    since = seen.get("since", stamp) if seen.get("confirmed") == state.confirmed_lsn else stamp
    behind = state.lag_bytes > source.lag_alert_mb << 20
    stalled_for = stamp - since
    problem = None
    if state.wal_status == "lost":
        problem = (
            f"replication slot `{source.slot}` of `{source.name}` was invalidated (its WAL was removed): "
            "change capture cannot continue; re-seed the tables (bulk load with full_reload) after "
            "dropping the slot"
        )
    elif behind and stalled_for >= source.stall_alert_minutes * 60:
        problem = (
            f"replication slot `{source.slot}` of `{source.name}` is stalled: {state.lag_bytes:,} bytes "
            f"behind and its position {state.confirmed_lsn} has not moved for {stalled_for / 60:.0f} min "
            "(is the sensor replication_cdc_" + source.name + " running? did its runs fail?)"
        )
    alerted = seen.get("alerted", False)
    text = None
    if problem and not alerted:
        text, alerted = f":warning: dw_platform: {problem}", True
    elif not problem and alerted:
        text, alerted = (
            f":white_check_mark: dw_platform: replication slot `{source.slot}` of `{source.name}` "
            f"is moving again ({state.lag_bytes:,} bytes behind)",
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
    context.update_cursor(json.dumps({"confirmed": state.confirmed_lsn, "since": since, "alerted": alerted}))
    return dg.SkipReason(problem or f"slot at {state.confirmed_lsn}, {state.lag_bytes:,} bytes behind")


@dg.definitions
def sensors() -> dg.Definitions:
    sources = load_sources().values()
    return dg.Definitions(sensors=[*(build_cdc_sensor(s) for s in sources), *(build_slot_watch(s) for s in sources)])
