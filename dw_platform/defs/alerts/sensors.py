"""Run-failure alerts for every job of the code location: a log line, and a post to the webhook
in DW_ALERT_WEBHOOK_URL when one is set (Slack-compatible JSON)."""

import dagster as dg

from dw_platform.lib.webhook import AlertWebhook


def failure_text(context: dg.RunFailureSensorContext) -> str:
    run = context.dagster_run
    message = context.failure_event.message or "no message"
    partition = run.tags.get("dagster/partition") or (
        f"{run.tags['dagster/asset_partition_range_start']}...{run.tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in run.tags
        else None
    )
    where = f" (partition {partition})" if partition else ""
    return f":red_circle: dw_platform run failed: job `{run.job_name}`{where}, run {run.run_id}: {message}"


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs every failed run of this code location and posts it to DW_ALERT_WEBHOOK_URL when set.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alert_webhook: AlertWebhook) -> None:
    text = failure_text(context)
    context.log.error(text)
    if not alert_webhook.configured:
        return
    try:
        status = alert_webhook.post(text)
        context.log.info(f"posted the failure to the alert webhook (HTTP {status})")
    except OSError as exc:  # an unreachable webhook must not hide the failure itself
        context.log.error(f"could not post the failure to the alert webhook: {exc}")
