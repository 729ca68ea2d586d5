"""Posting alerts to a Slack-compatible incoming webhook (`{"text": ...}` as JSON)."""

from __future__ import annotations

import json
import urllib.request

import dagster as dg


class AlertWebhook(dg.ConfigurableResource):
    """An incoming-webhook URL (a secret: it authorizes posting); empty means "log only"."""

    url: str = ""
    timeout_s: float = 10.0

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def post(self, text: str, blocks: list[dict] | None = None) -> int:
        """POST {"text": text} (and Slack blocks when given); returns the HTTP status."""
        payload = {"text": text, **({"blocks": blocks} if blocks else {})}
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return response.status
