"""The alert webhook, from the environment (DW_ALERT_WEBHOOK_URL, a secret); unset means log only."""

import os

import dagster as dg

from dw_platform.lib.webhook import AlertWebhook


@dg.definitions
def resources() -> dg.Definitions:
    url = dg.EnvVar("DW_ALERT_WEBHOOK_URL") if os.environ.get("DW_ALERT_WEBHOOK_URL") else ""
    return dg.Definitions(resources={"alert_webhook": AlertWebhook(url=url)})
