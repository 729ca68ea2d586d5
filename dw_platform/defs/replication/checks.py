"""Checks of a source's lakehouse tables and its change data capture.

On `bronze/lakehouse/<source>`, evaluated by the bulk load for the tables of its run (they are the
asset's `check_specs`: its partitions are loaded by a single run that reports each table as it
completes), and by each change data capture run that applied changes, for the tables it changed
(replication_cdc_<source> selects them). Each can also run alone from the UI, over every table:
- rows_match_snapshot: each table's Iceberg snapshot of its bulk load holds exactly the rows read.
- primary_key_unique: no primary key value occurs twice in the table's current data.
- no_failed_tables: no table of the source is `failed` in _cdc_status.
- schema_change_notifications_sent: every schema change that needs a notification got one.

On `bronze/cdc_events/<source>`, run after each capture+apply run (and on their own from the UI):
- replication_lag: WAL the slot has not confirmed (`pg_wal_lsn_diff(current, confirmed)`) stays
  under `lag_alert_mb`; the age of the oldest unapplied change is reported.
- no_stale_unapplied_events: no event in the log older than `stale_after_minutes` left unapplied.
- lakehouse_matches_source: when the source is quiet (nothing in the slot, nothing unapplied),
  every completed table equals its source table: row count and a content hash over the primary
  key and columns.
- changes_not_stalled: the slot is usable (not missing, invalidated or moved behind the platform's
  back) and no change has waited longer than `stall_alert_minutes` while nothing was captured or
  applied, whatever their size. Also reported by the slot watch sensor (every minute) when its
  outcome changes, as runs that die cannot evaluate it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from datetime import timedelta

import dagster as dg
import pyarrow.compute as pc

from dw_platform.defs.replication.partitions import cdc_events_key
from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.replication import eventlog
from dw_platform.replication.apply import consumer_offsets
from dw_platform.replication.capture import Capture
from dw_platform.replication.health import Assessment, assess
from dw_platform.replication.sources import SourceConfig, load_sources
from dw_platform.replication.status import ReplicationMeta, now
from dw_platform.replication.validate import compare_table

ROWS_MATCH = "rows_match_snapshot"
PK_UNIQUE = "primary_key_unique"
NO_FAILED = "no_failed_tables"
NOTIFICATIONS_SENT = "schema_change_notifications_sent"
NOT_STALLED = "changes_not_stalled"


def check_specs(asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            ROWS_MATCH,
            asset=asset_key,
            description=(
                "Per table: the Iceberg snapshot written by the bulk load holds exactly the rows read in the source snapshot."
            ),
        ),
        dg.AssetCheckSpec(PK_UNIQUE, asset=asset_key, description="Per table with a primary key: no key value twice."),
        dg.AssetCheckSpec(NO_FAILED, asset=asset_key, description="No table of the source is failed in _cdc_status."),
        dg.AssetCheckSpec(
            NOTIFICATIONS_SENT,
            asset=asset_key,
            description=("No schema change in _schema_changes is waiting for its notification (webhook unreachable)."),
        ),
    ]


def _table(lakehouse: Lakehouse, status: dict):
    return lakehouse.catalog().load_table(status["iceberg_table"])


def rows_match_snapshot(lakehouse: Lakehouse, statuses: dict[str, dict], keys: list[str]) -> dg.AssetCheckResult:
    counts, mismatched = {}, []
    for key in keys:
        status = statuses.get(key) or {}
        if status.get("status") != "completed" or status.get("snapshot_id") is None:
            continue
        in_iceberg = _table(lakehouse, status).scan(snapshot_id=status["snapshot_id"]).count()
        counts[key] = {"read": status["rows_loaded"], "iceberg": in_iceberg}
        if in_iceberg != status["rows_loaded"]:
            mismatched.append(key)
    return dg.AssetCheckResult(
        check_name=ROWS_MATCH,
        passed=not mismatched,
        metadata={"tables_checked": len(counts), "mismatched": ", ".join(mismatched) or "none", "counts": counts},
    )


def duplicate_keys(table, key: list[str]) -> int:
    """Rows whose primary key value an earlier row already has, in the table's current data.
    Sorts the key columns (a third of the memory a hash grouping takes)."""

    if table.current_snapshot() is None:
        return 0
    keys = table.scan(selected_fields=tuple(key)).to_arrow()
    if keys.num_rows < 2:
        return 0
    ordered = keys.take(pc.sort_indices(keys, sort_keys=[(k, "ascending") for k in key]))
    same = None
    for name in key:
        column = ordered.column(name)
        equal = pc.equal(column.slice(0, keys.num_rows - 1), column.slice(1))
        same = equal if same is None else pc.and_(same, equal)
    return pc.sum(same).as_py() or 0


def primary_key_unique(lakehouse: Lakehouse, statuses: dict[str, dict], keys: list[str]) -> dg.AssetCheckResult:
    duplicates = {}
    checked = 0
    for key in keys:
        status = statuses.get(key) or {}
        if not status.get("primary_key") or not status.get("iceberg_table"):
            continue
        checked += 1
        found = duplicate_keys(_table(lakehouse, status), status["primary_key"].split(","))
        if found:
            duplicates[key] = found
    return dg.AssetCheckResult(
        check_name=PK_UNIQUE,
        passed=not duplicates,
        metadata={"tables_checked": checked, "duplicated_keys": duplicates or "none"},
    )


def no_failed_tables(statuses: dict[str, dict]) -> dg.AssetCheckResult:
    failed = {k: s.get("last_error") for k, s in statuses.items() if s.get("status") == "failed"}
    return dg.AssetCheckResult(
        check_name=NO_FAILED, passed=not failed, metadata={"tables": len(statuses), "failed": failed or "none"}
    )


def notifications_sent(meta: ReplicationMeta) -> dg.AssetCheckResult:
    pending = [r for r in meta.schema_changes() if r["notification_sent"] is False]
    return dg.AssetCheckResult(
        check_name=NOTIFICATIONS_SENT,
        passed=not pending,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "pending": len(pending),
            "tables": ", ".join(sorted({f"{r['table_name']} v{r['schema_version']}" for r in pending})) or "none",
        },
    )


def evaluate(
    lakehouse: Lakehouse, meta: ReplicationMeta, keys: list[str], selected: Collection[dg.AssetCheckKey]
) -> Iterator[dg.AssetCheckResult]:
    """The `selected` checks: the per-table ones for `keys`, the others for the whole source."""
    statuses = meta.statuses()
    chosen = {check.name for check in selected}
    if ROWS_MATCH in chosen:
        yield rows_match_snapshot(lakehouse, statuses, keys)
    if PK_UNIQUE in chosen:
        yield primary_key_unique(lakehouse, statuses, keys)
    if NO_FAILED in chosen:
        yield no_failed_tables(statuses)
    if NOTIFICATIONS_SENT in chosen:
        yield notifications_sent(meta)


def not_stalled(found: Assessment) -> tuple[bool, dict]:
    """changes_not_stalled's outcome and metadata (for the check and the slot watch)."""
    stall = found.stall()
    oldest = found.oldest_waiting()
    return found.problem is None and stall is None, {
        "problem": found.problem or stall or "none",
        "oldest_waiting_change": oldest.isoformat() if oldest else "none",
        "unapplied_events": found.unapplied,
        "lag_bytes": found.slot.lag_bytes if found.slot else 0,
        "last_progress": found.last_progress.isoformat() if found.last_progress else "none",
        "stall_alert_minutes": found.source.stall_alert_minutes,
    }


def build_cdc_checks(source: SourceConfig) -> list[dg.AssetChecksDefinition]:

    key = cdc_events_key(source.name)

    @dg.asset_check(
        asset=key,
        name="replication_lag",
        description=(f"WAL the slot has not confirmed stays under {source.lag_alert_mb} MiB (lag_alert_mb)."),
    )
    def replication_lag(lakehouse: Lakehouse) -> dg.AssetCheckResult:

        state = Capture(source, lakehouse).find_slot()
        if state is None:
            return dg.AssetCheckResult(passed=False, metadata={"problem": f"slot {source.slot} does not exist"})
        confirmed, lag_bytes = state.confirmed_lsn, state.lag_bytes
        with lakehouse.connect() as conn:
            eventlog.ensure_log(conn)
            applied = consumer_offsets(ReplicationMeta(lakehouse, source.name), conn)
            waiting = eventlog.backlog(conn, source.name, applied)
        oldest = min((b.oldest_commit_ms for b in waiting), default=None)
        return dg.AssetCheckResult(
            passed=lag_bytes <= source.lag_alert_mb << 20,
            metadata={
                "lag_bytes": lag_bytes,
                "threshold_bytes": source.lag_alert_mb << 20,
                "confirmed_lsn": confirmed,
                "unapplied_events": sum(b.events for b in waiting),
                "oldest_unapplied_change_age_s": round(time.time() - oldest / 1000, 1) if oldest else 0,
            },
        )

    @dg.asset_check(
        asset=key,
        name="no_stale_unapplied_events",
        description=(f"No event in the log older than {source.stale_after_minutes:g} minutes is left unapplied."),
    )
    def no_stale_unapplied_events(lakehouse: Lakehouse) -> dg.AssetCheckResult:

        with lakehouse.connect() as conn:
            eventlog.ensure_log(conn)
            applied = consumer_offsets(ReplicationMeta(lakehouse, source.name), conn)
            waiting = eventlog.backlog(conn, source.name, applied)
        limit = now() - timedelta(minutes=source.stale_after_minutes)
        stale = {b.topic: b.events for b in waiting if b.oldest_captured_at < limit}
        return dg.AssetCheckResult(
            passed=not stale,
            metadata={"stale_topics": stale or "none", "unapplied_events": sum(b.events for b in waiting)},
        )

    @dg.asset_check(
        asset=key,
        name="lakehouse_matches_source",
        description=(
            "When the source is quiet: every completed lakehouse table equals its source table "
            "(row count and content hash over primary key and columns)."
        ),
    )
    def lakehouse_matches_source(lakehouse: Lakehouse) -> dg.AssetCheckResult:

        meta = ReplicationMeta(lakehouse, source.name)
        with lakehouse.connect() as conn:
            eventlog.ensure_log(conn)
            statuses, applied = meta.statuses(), consumer_offsets(meta, conn)
            waiting = eventlog.backlog(conn, source.name, applied)
        try:
            pending = Capture(source, lakehouse).has_pending_changes()
        except Exception as exc:  # the slot is in use by a capture run: not quiet
            pending = f"slot busy ({exc})"
        if pending or waiting:
            return dg.AssetCheckResult(
                passed=True,
                metadata={
                    "compared": "no: the source is not quiet",
                    "pending_in_slot": str(bool(pending)),
                    "unapplied_events": sum(b.events for b in waiting),
                },
            )
        tables = {
            k: compare_table(source, lakehouse, k, s)
            for k, s in sorted(statuses.items())
            if s.get("status") == "completed" and not (s.get("cdc_mode") or "").startswith("skipped")
        }
        differing = [k for k, t in tables.items() if not t["match"]]
        return dg.AssetCheckResult(
            passed=not differing, metadata={"tables": tables, "differing": ", ".join(differing) or "none"}
        )

    @dg.asset_check(
        asset=key,
        name=NOT_STALLED,
        description=(
            "The slot is usable (not missing, invalidated or moved behind the platform's back) and no change has "
            f"waited longer than {source.stall_alert_minutes:g} minutes (stall_alert_minutes) while nothing was "
            "captured or applied, whatever their size."
        ),
    )
    def changes_not_stalled(lakehouse: Lakehouse) -> dg.AssetCheckResult:

        passed, metadata = not_stalled(assess(source, lakehouse))
        return dg.AssetCheckResult(passed=passed, metadata=metadata)

    return [replication_lag, no_stale_unapplied_events, lakehouse_matches_source, changes_not_stalled]


@dg.definitions
def cdc_checks() -> dg.Definitions:
    return dg.Definitions(asset_checks=[c for s in load_sources().values() for c in build_cdc_checks(s)])
