"""One change-data-capture run of a source: drain the slot into the event log and the log into
the Iceberg tables, in turns, until both are empty or the time budget is spent; then the upkeep
(log retention, old Iceberg snapshots). One run per source at a time (a warehouse lock). A run
whose slot is unusable (missing, invalidated, moved behind the platform's back) fails at once,
capturing and applying nothing, until the source is re-seeded (`slot.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.lib.webhook import AlertWebhook
from dw_platform.replication import eventlog
from dw_platform.replication.apply import AppliedBatch, Apply, consumer_offsets
from dw_platform.replication.capture import Capture, CaptureResult
from dw_platform.replication.slot import SlotUnusable, slot_health
from dw_platform.replication.sources import SourceConfig
from dw_platform.replication.status import now


class AlreadyRunning(RuntimeError):
    pass


@contextmanager
def exclusive(lakehouse: Lakehouse, source: str) -> Iterator[None]:
    """Hold the source's change-capture lock for the block, or raise AlreadyRunning."""
    name = f"dw_platform.replication.cdc:{source}"
    with lakehouse.connect() as conn:
        if not conn.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)).fetchone()[0]:
            raise AlreadyRunning(f"another change-capture run of {source} is in progress")
        try:
            yield
        finally:
            conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (name,))


def run(
    source: SourceConfig,
    lakehouse: Lakehouse,
    webhook: AlertWebhook,
    *,
    run_id: str | None,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    add_partition: Callable[[str], None],
    batch_changes: int,
    time_budget_s: float,
) -> Iterator[AppliedBatch | CaptureResult]:
    """Yields each applied batch as it commits, then the capture totals (a CaptureResult) last."""
    started = time.perf_counter()
    capture = Capture(source, lakehouse, run_id=run_id, log=log, heartbeat_after_bytes=source.heartbeat_after_mb << 20)
    apply = Apply(source, lakehouse, webhook, run_id=run_id, log=log, warn=warn, add_partition=add_partition)
    total = CaptureResult()
    touched: set[str] = set()
    with exclusive(lakehouse, source.name):
        problem = slot_health(source, lakehouse).problem
        if problem:
            raise SlotUnusable(problem)
        while True:
            remaining = max(time_budget_s - (time.perf_counter() - started), 0.0)
            captured = capture.run(batch_changes, time_budget_s=remaining)
            total.add(captured)
            total.capture_seconds += captured.seconds
            total.confirmed_lsn, total.lag_bytes = captured.confirmed_lsn, captured.lag_bytes
            applied = 0
            for batch in apply.run(batch_changes):
                batch.lag_bytes = captured.lag_bytes
                applied += batch.events
                touched.add(batch.key)
                yield batch
            if (captured.events == 0 and applied == 0) or time.perf_counter() - started > time_budget_s:
                break
        upkeep(source, lakehouse, apply, touched, log)
    total.seconds = time.perf_counter() - started
    yield total


def upkeep(source: SourceConfig, lakehouse: Lakehouse, apply: Apply, touched: set[str], log) -> None:
    """Drop applied events past the log's retention; expire the touched tables' Iceberg snapshots
    past their retention (never the current one, nor the bulk load's, which the checks read)."""
    statuses = apply.meta.statuses()
    with lakehouse.connect() as conn:
        dropped = eventlog.drop_applied(conn, consumer_offsets(apply.meta, conn), source.log_retention_hours)
    if dropped:
        log(f"event log: dropped {dropped:,} applied events older than {source.log_retention_hours:g} h")
    cutoff = (now() - timedelta(days=source.snapshot_retention_days)).timestamp() * 1000
    for key in touched:
        status = statuses.get(key) or {}
        table = lakehouse.catalog().load_table(status["iceberg_table"])
        keep = {table.current_snapshot().snapshot_id, status.get("snapshot_id")}
        old = [s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff and s.snapshot_id not in keep]
        if old:
            table.maintenance.expire_snapshots().by_ids(old).commit()
            log(f"{key}: expired {len(old)} Iceberg snapshot(s) older than {source.snapshot_retention_days:g} days")
    apply.meta.expire_old_snapshots()
