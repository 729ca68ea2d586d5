"""The run-failure alert posts Slack-compatible JSON to a webhook: a real HTTP server on 127.0.0.1."""

import dagster as dg

from dw_platform.defs.alerts.sensors import run_failure_alert
from dw_platform.lib.webhook import AlertWebhook


@dg.op
def explode():
    raise dg.Failure("the source was unreachable")


@dg.job
def doomed():
    explode()


def failure_context(instance, resources):
    result = doomed.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources=resources,
    ).for_run_failure()


def test_a_failed_run_is_posted_to_the_webhook_as_slack_compatible_json(webhook):
    url, received = webhook
    instance = dg.DagsterInstance.ephemeral()

    run_failure_alert(failure_context(instance, {"alert_webhook": AlertWebhook(url=url)}))

    assert len(received) == 1
    assert received[0]["content_type"] == "application/json"
    text = received[0]["json"]["text"]
    assert "job `doomed`" in text and "failed" in text


def test_without_a_webhook_url_the_failure_is_only_logged(webhook):
    _url, received = webhook
    instance = dg.DagsterInstance.ephemeral()

    run_failure_alert(failure_context(instance, {"alert_webhook": AlertWebhook()}))

    assert received == []


def test_an_unreachable_webhook_does_not_raise(webhook):
    url, received = webhook
    instance = dg.DagsterInstance.ephemeral()
    dead = url.replace("/hooks/alerts", "").rsplit(":", 1)[0] + ":9"  # the discard port: nothing listens

    run_failure_alert(failure_context(instance, {"alert_webhook": AlertWebhook(url=dead, timeout_s=2)}))

    assert received == []


def test_the_sensor_is_a_run_failure_sensor_for_the_whole_code_location(definitions):
    sensor = definitions.resolve_sensor_def("run_failure_alert")
    assert isinstance(sensor, dg.RunStatusSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
