"""Schema-change tracking: what changed between two recorded schemas of a table, the
`_schema_changes` rows that record it, and the notifications posted to the alert webhook.

A table's first load records its baseline (version 1, `table_created`, no notification); any later
difference (a bulk re-load, or a relation message during change data capture) records one row per
change under the next version, with `notification_sent = false` until the webhook took it. With no
webhook configured the notification goes to the run log and counts as sent; an unreachable webhook
leaves it pending (a check reports it) and the next run of the domain posts it again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from itertools import groupby

from dw_platform.lib.webhook import AlertWebhook
from dw_platform.replication.status import ReplicationMeta, now


def diff(before: list[dict] | None, after: list[dict]) -> list[tuple[str, str | None]]:
    """(change type, column) for each difference; a table with no recorded schema is `table_created`."""
    if before is None:
        return [("table_created", None)]
    old = {c["name"]: c for c in before}
    new = {c["name"]: c for c in after}
    changes = [("column_added", n) for n in new if n not in old]
    changes += [("column_removed", n) for n in old if n not in new]
    changes += [("type_changed", n) for n in new if n in old and new[n]["type"] != old[n]["type"]]
    return changes


def record(
    meta: ReplicationMeta,
    table_key: str,
    after: list[dict],
    snapshot_id: int | None,
    run_id: str | None,
    notify_baseline: bool = False,
    recorded: tuple[int, list[dict] | None] | None = None,
) -> list[dict]:
    """Compare `after` with the table's recorded schema (`recorded`: as the caller just read it);
    record the changes (if any) and return them. A baseline is notified only when asked (a table
    that appeared on the source during capture)."""
    version, before = recorded or meta.current_schema(table_key)
    changes = diff(before, after)
    if not changes:
        return []
    baseline = before is None
    stamp = now()
    rows = [
        {
            "change_id": str(uuid.uuid4()),
            "source": meta.source,
            "table_name": table_key,
            "change_time": stamp,
            "change_type": change_type,
            "column_name": column,
            "schema_before": None if baseline else json.dumps(before),
            "schema_after": json.dumps(after),
            "schema_version": version + 1,
            "snapshot_id": snapshot_id,
            "notification_sent": None if baseline and not notify_baseline else False,
            "notification_sent_at": None,
            "dagster_run_id": run_id,
        }
        for change_type, column in changes
    ]
    meta.record_changes(rows)
    return rows


def message(rows: list[dict]) -> str:
    """One Slack-compatible line for the changes of one table version."""
    first = rows[0]
    before = {c["name"]: c["type"] for c in json.loads(first["schema_before"] or "[]")}
    after = {c["name"]: c["type"] for c in json.loads(first["schema_after"])}
    parts = []
    if first["change_type"] == "table_created":
        parts.append("new table: " + ", ".join(f"`{name}` {kind}" for name, kind in after.items()))
    for row in rows:
        column = row["column_name"]
        if row["change_type"] == "column_added":
            parts.append(f"column added `{column}` {after[column]}")
        elif row["change_type"] == "column_removed":
            parts.append(f"column removed `{column}` (was {before[column]})")
        elif row["change_type"] == "type_changed":
            parts.append(f"type changed `{column}` {before[column]} -> {after[column]}")
    return (
        f":warning: dw_platform replication: schema change in `{first['source']}` table "
        f"`{first['table_name']}` (schema version {first['schema_version']}): {'; '.join(parts)}"
    )


def notify_pending(
    meta: ReplicationMeta, webhook: AlertWebhook, log: Callable[[str], None], warn: Callable[[str], None]
) -> tuple[int, int]:
    """Post every pending notification of the source, one message per table version; mark the
    posted rows sent. Returns (messages sent, messages still pending)."""
    pending = [r for r in meta.schema_changes() if r["notification_sent"] is False]
    sent, failed = 0, 0
    for _, group in groupby(pending, key=lambda r: (r["table_name"], r["schema_version"])):
        rows = list(group)
        text = message(rows)
        if webhook.configured:
            try:
                webhook.post(text)
            except OSError as exc:  # unreachable: stays pending, the check reports it
                warn(f"could not post a schema-change notification to the alert webhook: {exc}")
                failed += 1
                continue
        else:
            warn(f"{text} (no DW_ALERT_WEBHOOK_URL set: logged only)")
        meta.mark_sent([r["change_id"] for r in rows], now())
        log(f"schema-change notification sent: {text}")
        sent += 1
    return sent, failed
