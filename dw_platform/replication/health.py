"""Is change capture of a source alive? One look for the sensors and the checks: the slot's
health (`slot.py`: missing, invalidated, or moved behind the platform's back), and whether changes
are moving. Stalled: a change committed on the source more than `stall_alert_minutes` ago still
waits (in the slot, or unapplied in the log for a table that can take it) and nothing was
captured, applied or loaded for as long, whatever the lag in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.replication import eventlog
from dw_platform.replication.apply import consumer_offsets, takes_changes
from dw_platform.replication.capture import Capture, SlotState
from dw_platform.replication.eventlog import Backlog
from dw_platform.replication.slot import slot_health
from dw_platform.replication.sources import SourceConfig
from dw_platform.replication.status import ReplicationMeta, now


@dataclass
class Assessment:
    """One look at a source's change capture."""

    source: SourceConfig
    slot: SlotState | None  # None: the slot does not exist
    problem: str | None = None  # why the slot is unusable (capture and apply stopped)
    oldest_in_slot: datetime | None = None  # commit time of the first transaction waiting in the slot
    backlog: list[Backlog] = field(default_factory=list)  # unapplied events of tables that can take them
    applied: dict[str, int] = field(default_factory=dict)  # consumer offset per topic
    statuses: dict[str, dict] = field(default_factory=dict)
    last_progress: datetime | None = None  # the last capture, apply or load

    @property
    def pending(self) -> bool:
        return self.oldest_in_slot is not None or bool(self.backlog)

    @property
    def unapplied(self) -> int:
        return sum(b.events for b in self.backlog)

    def oldest_waiting(self) -> datetime | None:
        times = [self.oldest_in_slot] if self.oldest_in_slot else []
        times += [datetime.fromtimestamp(b.oldest_commit_ms / 1000, timezone.utc) for b in self.backlog]
        return min(times, default=None)

    def stalled_for(self, at: datetime | None = None) -> timedelta | None:
        """How long changes have waited with nothing moving (None: nothing waits)."""
        oldest = self.oldest_waiting()
        if oldest is None:
            return None
        return (at or now()) - max(oldest, self.last_progress or oldest)

    def stall(self, at: datetime | None = None) -> str | None:
        """Why change capture counts as stalled, or None."""
        waited = self.stalled_for(at)
        if waited is None or waited < timedelta(minutes=self.source.stall_alert_minutes):
            return None
        where = []
        if self.oldest_in_slot is not None:
            where.append(f"in the slot ({self.slot.lag_bytes:,} bytes of WAL behind)" if self.slot else "in the slot")
        if self.backlog:
            where.append(f"{self.unapplied:,} unapplied in the event log")
        return (
            f"change capture of `{self.source.name}` is stalled: changes committed since "
            f"{self.oldest_waiting():%Y-%m-%d %H:%M:%S} UTC wait ({', '.join(where)}) and nothing was captured "
            f"or applied for {waited.total_seconds() / 60:.0f} min (is the sensor replication_cdc_{self.source.name} "
            "running? are its runs failing or dying?)"
        )


def assess(source: SourceConfig, lakehouse: Lakehouse) -> Assessment:
    """The slot's health, what waits and since when. The slot's first waiting transaction is
    peeked at (decoding up to it) unless a run reads the slot now."""
    meta = ReplicationMeta(lakehouse, source.name)
    health = slot_health(source, lakehouse, meta)  # reaches the source first: ConfigError without a URL
    with lakehouse.connect() as conn:
        statuses = meta.statuses()
        applied = consumer_offsets(meta, conn, statuses)
        backlog = eventlog.backlog(conn, source.name, applied)
    found = Assessment(source, health.slot, health.problem, statuses=statuses, applied=applied)
    found.backlog = [b for b in backlog if takes_changes(statuses.get(backlog_key(b)))]
    progress = [health.mark.updated_at] if health.mark else []
    progress += [s[f] for s in statuses.values() for f in ("applied_at", "completed_at") if s.get(f)]
    found.last_progress = max(progress, default=None)
    slot = health.slot
    if health.problem is None and slot is not None and slot.lag_bytes > 0 and not slot.active:
        found.oldest_in_slot = Capture(source, lakehouse).oldest_pending()
    return found


def backlog_key(backlog: Backlog) -> str:
    """The table (schema.table) of a backlog's topic (<source>.<schema>.<table>)."""
    return backlog.topic.split(".", 1)[1]
