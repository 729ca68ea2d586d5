"""Whether a source's replication slot can still give every change since the platform last read it.

The platform records where it left the slot (`bronze.cdc_capture.slot_lsn`: the position it
created the slot at, or is about to advance it to). The slot is unusable, and changes have been
lost to capture, when it is missing although tables were loaded from it (dropped behind the
platform's back), invalidated by PostgreSQL (`wal_status = lost`: the WAL it needed was removed),
or further on than the platform left it (another consumer read it, or it was dropped and created
again). Then capture and apply stop (`cdc.py`), and a bulk load must re-seed every table loaded
from it in one run, at one new slot's position (`bulk.py`); a one-table reload is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.replication import eventlog
from dw_platform.replication.capture import Capture, SlotState
from dw_platform.replication.eventlog import CaptureMark, lsn_text
from dw_platform.replication.postgres import lsn_to_int
from dw_platform.replication.sources import SourceConfig
from dw_platform.replication.status import ReplicationMeta


class SlotUnusable(RuntimeError):
    """The slot cannot give the changes since the platform last read it: re-seed the source."""


@dataclass(frozen=True)
class SlotHealth:
    source: SourceConfig
    slot: SlotState | None  # as the source shows it; None: it does not exist
    mark: CaptureMark | None  # where the platform left it
    loaded: bool  # tables were loaded from the source's slot (a missing slot matters)
    cause: str | None  # what happened to it, when it is unusable; None: usable (or not created yet)

    @property
    def name(self) -> str:
        return f"replication slot `{self.source.slot}` of `{self.source.name}`"

    @property
    def problem(self) -> str | None:
        """The whole story for an operator: what happened, what it means, what to do."""
        if self.cause is None:
            return None
        return f"{self.name} {self.cause}; {reseed_advice(self.source)}"


def reseed_advice(source: SourceConfig) -> str:
    return (
        f"change capture and apply of `{source.name}` are stopped; re-seed every table in ONE run: materialize "
        f"all partitions of bronze/lakehouse/{source.name} (job replication_bulk_load_{source.name}), which "
        "makes a new slot and copies them all at its position"
    )


def slot_health(source: SourceConfig, lakehouse: Lakehouse, meta: ReplicationMeta | None = None) -> SlotHealth:
    """The slot compared with where the platform left it (reads the source first, so a source
    without a URL raises ConfigError before the warehouse is touched)."""
    slot = Capture(source, lakehouse).find_slot()
    with lakehouse.connect() as conn:
        eventlog.ensure_log(conn)
        mark = eventlog.capture_mark(conn, source.name)
    loaded = mark is not None
    if slot is None and not loaded:  # before change capture began: did a bulk load use the slot?
        statuses = (meta or ReplicationMeta(lakehouse, source.name)).statuses()
        loaded = any(s.get("start_lsn") and s.get("snapshot_kind") != "change_stream" for s in statuses.values())
    return SlotHealth(source, slot, mark, loaded, slot_cause(source, slot, mark, loaded))


def slot_cause(source: SourceConfig, slot: SlotState | None, mark: CaptureMark | None, loaded: bool) -> str | None:
    if slot is None:
        if not loaded:
            return None  # not created yet: the first bulk load makes it
        where = f" (this platform left it at {lsn_text(mark.slot_lsn)})" if mark and mark.slot_lsn is not None else ""
        return f"does not exist on the source any more{where}: it was dropped, and the changes made since are lost"
    if slot.wal_status == "lost":
        return (
            "was invalidated by PostgreSQL (wal_status lost: the WAL it needed was removed, see "
            f"max_slot_wal_keep_size): the changes since {slot.confirmed_lsn} are lost"
        )
    if mark and mark.slot_name == source.slot and mark.slot_lsn is not None and slot.confirmed_lsn:
        if lsn_to_int(slot.confirmed_lsn) > mark.slot_lsn:
            return (
                f"is at {slot.confirmed_lsn}, past {lsn_text(mark.slot_lsn)} where this platform left it (another "
                "consumer read it, or it was dropped and created again): the changes in between are lost"
            )
    return None
