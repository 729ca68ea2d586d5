"""Apply: the event log -> the Iceberg tables, exactly once in effect.

Per table (topic), in micro-batches after the consumer's committed offset:

1. events of transactions that committed before the table's start LSN are dropped: the bulk
   copy already holds them (a transaction is in the copy iff its commit record ends at or before
   the start LSN, i.e. its commit LSN is lower);
2. a relation shape that differs from the table's recorded schema first evolves the table (new
   column, widened type) in a schema-only commit and is recorded in `_schema_changes` and
   notified, before any row of the new shape is written. A change PostgreSQL applies to existing
   rows without streaming them (a column added with a default, identity or generated value, a
   column renamed, a type changed: rows rewritten) is backfilled instead: the table is copied
   again from the source at a new consistent position (a temporary slot's snapshot, as a bulk
   reload), and its changes before that position are dropped;
3. the batch is folded to the latest event per primary key (by log position), a truncate
   empties the table first, and deletes + upserts go to Iceberg in ONE transaction whose snapshot
   summary records the batch's last offset and LSN (`dw.applied-offset`, `dw.applied-lsn`);
4. only then are the table's applied position and consumer offset written to `_cdc_status`.

A crash between 3 and 4 leaves `_cdc_status` behind the table; the next run starts after the
larger of the two offsets (the snapshot summary commits atomically with the data), and applying
a batch again would not change the table anyway: it deletes the batch's keys and writes their
latest images (idempotent by key and LSN). Tables without a primary key (REPLICA IDENTITY FULL)
are rewritten whole per batch with the changes applied row by row (whole-row identity).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.lib.webhook import AlertWebhook
from dw_platform.replication import eventlog, iceberg, schema_changes
from dw_platform.replication.bulk import BulkLoad, cdc_mode, table_lock
from dw_platform.replication.capture import UNAVAILABLE
from dw_platform.replication.eventlog import LoggedEvent, RelationShape, lsn_text
from dw_platform.replication.extractor import SourceTable
from dw_platform.replication.extractors import extractor_for
from dw_platform.replication.postgres import lsn_to_int
from dw_platform.replication.sources import SourceConfig
from dw_platform.replication.status import ReplicationMeta, now
from dw_platform.replication.typemap import SourceColumn, postgres_column, text_to_iceberg_array

if TYPE_CHECKING:
    import pyarrow as pa

# A test seam: called with the table key after its Iceberg commit, before `_cdc_status` is written.
AFTER_TABLE_COMMIT: Callable[[str], None] | None = None
# `_cdc_status.note` of a table whose backfill is due: kept until the copy completes, so a run that
# dies in between leaves it for the next run to do again.
BACKFILL_NOTE = "backfill due:"
# Per column of a source table, whether existing rows got a value PostgreSQL did not stream when it
# was added: a default (fast: `atthasmissing`; volatile: the table was rewritten), an identity or a
# generated value.
FILLED_COLUMNS = """
select attname::text, atthasmissing or atthasdef or attidentity <> '' or attgenerated <> ''
from pg_attribute where attrelid = %s and attnum > 0 and not attisdropped
"""


@dataclass
class AppliedBatch:
    key: str
    topic: str
    events: int = 0
    ops: Counter = field(default_factory=Counter)
    dropped: int = 0  # at or before the table's start position: already in the bulk copy
    snapshot_id: int | None = None
    applied_offset: int = -1
    applied_lsn: str = ""
    newest_commit_ms: int | None = None
    oldest_commit_ms: int | None = None
    rows: int | None = None
    created: bool = False
    schema_changes: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    lag_bytes: int = 0  # the slot's lag (WAL bytes not yet captured) when the batch was applied
    backfill: str | None = None  # why the table was copied again from the source instead
    start_lsn: str | None = None  # the backfill's position


class NeedsBackfill(Exception):
    """A change PostgreSQL did not stream: the table must be copied again from the source."""


class TableBlocked(Exception):
    """The table cannot take these changes now (a type Iceberg cannot follow in place, a backfill
    that failed): the other tables go on."""


def takes_changes(status: dict | None) -> bool:
    """Whether a change-capture run works on a table's changes: it is loaded (or new on the source:
    created from its first change), or its backfill is due (the run does it first)."""
    return status is None or status.get("status") == "completed" or backfill_due(status)


def backfill_due(status: dict | None) -> bool:
    return bool(status) and (status.get("note") or "").startswith(BACKFILL_NOTE)


class StatusMoved(Exception):
    """The table's status changed since this run read it (a bulk reload ran meanwhile): the next
    run picks the table up from its new state."""


def shape_columns(shape: RelationShape) -> tuple[SourceColumn, ...]:
    return tuple(
        postgres_column(
            c["name"], c["source_type"], c["base_type"], c["base_typmod"], c["category"], domain=c["domain"]
        )
        for c in shape.columns
    )


def shape_table(shape: RelationShape) -> SourceTable:
    key = shape.key if shape.replica_identity in ("d", "i") else ()
    return SourceTable(shape.schema, shape.name, shape_columns(shape), key, shape.replica_identity)


def shape_schema(shape: RelationShape) -> list[dict]:
    """The shape as recorded in _schema_changes (pgoutput does not say whether a column is nullable)."""
    key = set(shape_table(shape).primary_key)
    return [
        {"name": c["name"], "type": c["source_type"], "nullable": None, "primary_key": c["name"] in key}
        for c in shape.columns
    ]


class Apply:
    """Applies one source's event log to its Iceberg tables."""

    def __init__(
        self,
        source: SourceConfig,
        lakehouse: Lakehouse,
        webhook: AlertWebhook,
        *,
        run_id: str | None,
        log: Callable[[str], None],
        warn: Callable[[str], None],
        add_partition: Callable[[str], None] = lambda _key: None,
    ):
        self.source = source
        self.lakehouse = lakehouse
        self.webhook = webhook
        self.meta = ReplicationMeta(lakehouse, source.name)
        self.run_id = run_id
        self.log = log
        self.warn = warn
        self.add_partition = add_partition
        self._shapes: dict[int, RelationShape] = {}

    def run(self, batch_size: int) -> Iterator[AppliedBatch]:
        """Apply every topic's pending events, batch by batch; yields each applied batch."""
        with self.lakehouse.connect() as wh:
            eventlog.ensure_log(wh)
            topics = eventlog.topics_of(wh, self.source.name)
        statuses = self.meta.statuses()
        for topic, info in sorted(topics.items()):
            key = f"{info['schema']}.{info['table']}"
            try:
                yield from self.apply_topic(topic, key, statuses.get(key), info["next_offset"], batch_size)
            except TableBlocked as exc:
                self.warn(f"{key}: {exc}")
            except StatusMoved as exc:
                self.log(f"{key}: {exc}")

    def apply_topic(
        self, topic: str, key: str, status: dict | None, next_offset: int, batch_size: int
    ) -> Iterator[AppliedBatch]:
        if status is not None and status.get("status") != "completed":
            if not backfill_due(status):
                self.log(
                    f"{key}: {status.get('status')} in _cdc_status: its changes wait in the log until it is loaded"
                )
                return
            yield self._backfill(topic, key, status["note"].removeprefix(BACKFILL_NOTE).strip())
            status = self.meta.statuses()[key]
        offset = -1 if status is None else self._resume_offset(key, status)
        while offset < next_offset - 1:
            with self.lakehouse.connect() as wh:
                events = eventlog.read_events(wh, topic, offset, batch_size)
                missing = {e.relation_id for e in events} - set(self._shapes)
                if missing:
                    self._shapes.update(eventlog.relations(wh, missing))
            if not events:
                break
            try:
                batch = self._apply_batch(topic, key, status, events)
            except NeedsBackfill as exc:
                yield self._backfill(topic, key, str(exc))
                status = self.meta.statuses()[key]
                offset = self._resume_offset(key, status)
                continue
            offset = batch.applied_offset
            status = self.meta.statuses()[key]
            if batch.events or batch.created:
                yield batch

    def _backfill(self, topic: str, key: str, reason: str) -> AppliedBatch:
        """Copy the table again from the source at a new consistent position (a bulk reload of
        this one table: the slot goes on, so the other tables keep every change)."""
        started = time.perf_counter()
        self.meta.update({key: {"note": f"{BACKFILL_NOTE} {reason}"}})
        self.warn(f"{key}: {reason}; copying the table again from the source at a new consistent position")
        load = BulkLoad(
            self.source, extractor_for(self.source), self.lakehouse, run_id=self.run_id, log=self.log, warn=self.warn
        )
        result = next(r for r in load.run([key], full_reload=True) if r.key == key)
        schema_changes.notify_pending(self.meta, self.webhook, self.log, self.warn)
        if result.status != "completed":
            raise TableBlocked(f"its backfill failed ({result.error}); the next run tries again")
        self.log(f"{key}: backfilled: {result.rows:,} rows copied at {result.start_lsn}")
        return AppliedBatch(
            key,
            topic,
            snapshot_id=result.snapshot_id,
            rows=result.rows,
            schema_changes=result.schema_changes,
            seconds=time.perf_counter() - started,
            backfill=reason,
            start_lsn=result.start_lsn,
        )

    def _resume_offset(self, key: str, status: dict) -> int:
        """After the larger of the committed consumer offset and the offset the table's current
        snapshot says it holds. They differ only after a crash between the two commits; then
        `_cdc_status` is brought up to the table first."""
        committed = status.get("applied_offset")
        committed = -1 if committed is None else committed
        table = self.lakehouse.catalog().load_table(status["iceberg_table"])
        snapshot = table.current_snapshot()
        if iceberg.summary_value(snapshot, "dw.operation") != "cdc_apply":
            return committed
        in_table = int(iceberg.summary_value(snapshot, "dw.applied-offset", -1))
        if in_table > committed:
            self.warn(
                f"{key}: the table holds changes up to offset {in_table} but _cdc_status says {committed} "
                "(a run stopped between the two commits); recording the table's position and going on from it"
            )
            self.meta.update(
                {
                    key: {
                        "applied_offset": in_table,
                        "applied_at": now(),
                        "applied_lsn": iceberg.summary_value(snapshot, "dw.applied-lsn"),
                    }
                }
            )
            return in_table
        return committed

    # ------------------------------------------------------------------ one batch

    def _apply_batch(self, topic: str, key: str, status: dict | None, events: list[LoggedEvent]) -> AppliedBatch:
        started = time.perf_counter()
        batch = AppliedBatch(key, topic, applied_offset=events[-1].offset, applied_lsn=lsn_text(events[-1].commit_lsn))
        with table_lock(self.lakehouse, self.source.name, key):
            now_status = self.meta.statuses().get(key)
            if now_status != status and (
                now_status is None
                or status is None
                or any(now_status.get(f) != status.get(f) for f in ("status", "start_lsn", "applied_offset"))
            ):
                raise StatusMoved("its status changed during this run (a bulk load?); the next run continues")
            if status is None:
                status = self._create(key, events)
                batch.created = True
            start = lsn_to_int(status["start_lsn"])
            kept = [e for e in events if e.commit_lsn >= start]
            batch.dropped = len(events) - len(kept)
            table = self.lakehouse.catalog().load_table(status["iceberg_table"])
            if kept and (status.get("cdc_mode") or "key").startswith("skipped"):
                batch.dropped, kept = len(events), []
            if kept:
                table, batch.schema_changes = self._evolve(key, table, kept)
                mode = status.get("cdc_mode") or "key"
                properties = {
                    "dw.operation": "cdc_apply",
                    "dw.applied-offset": str(batch.applied_offset),
                    "dw.applied-lsn": batch.applied_lsn,
                    "dw.batch-id": str(uuid.uuid4()),
                    "dw.dagster-run-id": self.run_id or "",
                }
                with table.transaction() as tx:
                    if mode == "full_row":
                        self._write_full_row(tx, table, kept, properties)
                    else:
                        self._write_by_key(tx, table, kept, properties)
                table = table.refresh()
                snapshot = table.current_snapshot()
                batch.snapshot_id = snapshot.snapshot_id
                batch.rows = int(iceberg.summary_value(snapshot, "total-records", 0))
                if AFTER_TABLE_COMMIT is not None:
                    AFTER_TABLE_COMMIT(key)
            batch.events = len(kept)
            batch.ops = Counter(e.op for e in kept)
            if kept:
                batch.newest_commit_ms = max(e.commit_ms for e in kept)
                batch.oldest_commit_ms = min(e.commit_ms for e in kept)
            fields = {
                "applied_offset": batch.applied_offset,
                "applied_lsn": batch.applied_lsn,
                "applied_at": now(),
                "events_applied": (status.get("events_applied") or 0) + batch.events,
            }
            if batch.ops["t"]:
                fields["truncated_at"] = now()
            self.meta.update({key: fields})
        batch.seconds = time.perf_counter() - started
        return batch

    def _create(self, key: str, events: list[LoggedEvent]) -> dict:
        """A table that appeared on the source after the bulk load: created from its relation
        message; its start position is its first change's commit LSN (every row came as a change)."""
        shape = self._shapes[events[0].relation_id]
        table = shape_table(shape)
        ice, _ = iceberg.load_or_create(
            self.lakehouse.catalog(), self.source.namespace, table, self.source.file_size_mb
        )
        status = {
            "status": "completed",
            "iceberg_table": ".".join(ice.name()),
            "start_lsn": lsn_text(events[0].commit_lsn),
            "snapshot_kind": "change_stream",
            "rows_loaded": 0,
            "files": 0,
            "attempts": 0,
            "completed_at": now(),
            "primary_key": ",".join(table.primary_key),
            "cdc_mode": cdc_mode(self.source, table),
            "events_applied": 0,
            "note": "created from the change stream (appeared after the bulk load)",
        }
        self.meta.update({key: status})
        rows = schema_changes.record(self.meta, key, shape_schema(shape), None, self.run_id, notify_baseline=True)
        schema_changes.notify_pending(self.meta, self.webhook, self.log, self.warn)
        self.add_partition(key)
        self.log(
            f"{key}: new on the source; created {status['iceberg_table']} from its relation message, "
            f"start position {status['start_lsn']}"
        )
        return {**status, "schema_version": rows[0]["schema_version"] if rows else 1}

    def _evolve(self, key: str, table, events: list[LoggedEvent]):
        """Evolve the Iceberg table to every relation shape in `events` (in order), recording and
        notifying each change before the data is written (NeedsBackfill for a change PostgreSQL
        did not stream). Returns the table and the changes."""
        recorded = []
        for relation_id in dict.fromkeys(e.relation_id for e in events):
            shape = self._shapes[relation_id]
            version, before = self.meta.current_schema(key)
            reason = self._unstreamed(shape, schema_changes.diff(before, shape_schema(shape)))
            if reason:
                raise NeedsBackfill(reason)
            changes = schema_changes.record(
                self.meta, key, shape_schema(shape), None, self.run_id, recorded=(version, before)
            )
            plan = iceberg.plan_evolution(table.schema(), shape_table(shape), drop_removed=False)
            if plan.replaced:
                names = ", ".join(c.name for c in plan.replaced)
                message = (
                    f"column(s) {names} changed type on the source in a way the Iceberg table cannot follow "
                    f"in place; re-seed the table (bulk load with full_reload: true)"
                )
                self.meta.update({key: {"status": "failed", "last_error": message}})
                schema_changes.notify_pending(self.meta, self.webhook, self.log, self.warn)
                raise TableBlocked(message)
            if plan.added or plan.widened or plan.key:
                with table.transaction() as tx:
                    iceberg.evolve(tx, plan)
                table = table.refresh()
                self.log(
                    f"{key}: schema evolved from its relation message: "
                    + ", ".join(f"{c['change_type']} {c['column_name'] or ''}".strip() for c in changes)
                )
            if changes:
                recorded += changes
                schema_changes.notify_pending(self.meta, self.webhook, self.log, self.warn)
        return table, recorded

    def _unstreamed(self, shape: RelationShape, changes: list[tuple[str, str | None]]) -> str | None:
        """Why rows that existed before a schema change hold values PostgreSQL did not stream
        (None: the change alone does not alter existing rows)."""
        kinds: dict[str, list[str]] = {}
        for kind, column in changes:
            kinds.setdefault(kind, []).append(column)
        if "type_changed" in kinds:
            return f"column(s) {', '.join(kinds['type_changed'])} changed type (rows rewritten, not streamed)"
        added = kinds.get("column_added", [])
        if added and "column_removed" in kinds:
            return (
                f"column(s) {', '.join(kinds['column_removed'])} gone and {', '.join(added)} added "
                "(renamed? existing values not streamed)"
            )
        if not added:
            return None
        with extractor_for(self.source).connect() as src:
            on_source = dict(src.execute(FILLED_COLUMNS, (shape.relid,)).fetchall())
        filled = [c for c in added if on_source.get(c, True)]  # gone again since (renamed, dropped): unknowable
        if filled:
            return (
                f"column(s) {', '.join(filled)} added with values for the existing rows (a default, identity or "
                "generated value) that PostgreSQL does not stream"
            )
        return None

    # ------------------------------------------------------------------ tables with a key

    def _write_by_key(self, tx, table, events: list[LoggedEvent], properties: dict) -> None:
        from pyiceberg.expressions import AlwaysTrue

        shape = self._shapes[events[-1].relation_id]
        schema = table.schema()
        key_cols = list(shape_table(shape).primary_key) or [
            schema.find_column_name(i) for i in schema.identifier_field_ids
        ]
        latest, truncated = fold_by_key(events, key_cols)
        upserts = [(k, image, e) for k, (image, e) in latest.items() if image is not None]
        definitions = {c.name: c for c in shape_columns(shape)}
        layout = iceberg.BatchLayout.of(tx)
        unresolved = [k for k, image, _ in upserts if UNAVAILABLE in image.values()]
        if unresolved and not truncated:  # unchanged TOAST values not in this batch: the table has them
            current = iceberg.rows_with_keys(table, typed_keys(key_cols, unresolved, definitions, layout))
            by_key = {tuple(r[c] for c in key_cols): r for r in current.to_pylist()}
            typed = typed_keys(key_cols, unresolved, definitions, layout).to_pylist()
            found = {k: by_key.get(tuple(t[c] for c in key_cols), {}) for k, t in zip(unresolved, typed)}
            for k, image, _ in upserts:
                for column, value in image.items():
                    if value == UNAVAILABLE:
                        image[column] = as_text(found.get(k, {}).get(column))
        batches = []
        if upserts:
            data = images_batch(self._columns(table), definitions, [image for _, image, _ in upserts])
            batches.append(
                iceberg.with_lineage(
                    data,
                    layout,
                    op=[e.op for _, _, e in upserts],
                    lsn=[e.commit_lsn for _, _, e in upserts],
                    load_ts=datetime.now(timezone.utc),
                    batch_id=properties["dw.batch-id"],
                    source_file=f"{self.source.name}:{shape.schema}.{shape.name}",
                )
            )
        if truncated:
            if iceberg.has_rows(tx):
                tx.delete(AlwaysTrue(), snapshot_properties=properties)
            self._append(tx, table, batches, properties)
        else:
            iceberg.replace_by_key(
                tx, table, typed_keys(key_cols, list(latest), definitions, layout), batches, properties
            )

    @staticmethod
    def _columns(table) -> list:
        return [f for f in table.schema().fields if f.name not in iceberg.LINEAGE_NAMES]

    @staticmethod
    def _append(tx, table, batches, properties: dict) -> None:
        with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
            for _ in iceberg.write_files(tx, table, batches, append):
                pass

    # ------------------------------------------------------------------ tables without a key

    def _write_full_row(self, tx, table, events: list[LoggedEvent], properties: dict) -> None:
        """Whole-row identity (REPLICA IDENTITY FULL): rewrite the table with each change applied in
        order; a delete or an update removes one row equal to its old image."""
        from pyiceberg.expressions import AlwaysTrue

        shape = self._shapes[events[-1].relation_id]
        definitions = {c.name: c for c in shape_columns(shape)}
        columns = self._columns(table)
        names = [f.name for f in columns]
        images = [image for e in events for image in (e.before, e.after) if image is not None]
        typed = iter(images_batch(columns, definitions, images).to_pylist() if images else [])
        rows = table.scan().to_arrow().to_pylist() if iceberg.has_rows(tx) else []
        present: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            present.setdefault(tuple(row[n] for n in names), []).append(i)
        removed: set[int] = set()
        added: list[tuple[dict, LoggedEvent]] = []
        for e in events:
            before = next(typed) if e.before is not None else None
            after = next(typed) if e.after is not None else None
            if e.op == "t":
                removed.update(range(len(rows)))
                added.clear()
                continue
            if before is not None:
                signature = tuple(before[n] for n in names)
                if present.get(signature):
                    removed.add(present[signature].pop())
                else:  # a row this batch added
                    at = next(
                        (j for j, (row, _) in enumerate(added) if tuple(row[n] for n in names) == signature), None
                    )
                    if at is not None:
                        del added[at]
            if after is not None:
                if before is not None:  # unchanged TOAST values: the old row (identity FULL) has them
                    after = {n: before[n] if e.after.get(n) == UNAVAILABLE else after[n] for n in names}
                added.append((after, e))
        layout = iceberg.BatchLayout.of(tx)
        if iceberg.has_rows(tx):
            tx.delete(AlwaysTrue(), snapshot_properties=properties)
        batches = []
        kept = [r for i, r in enumerate(rows) if i not in removed]
        if kept:
            batches.append(as_layout(kept, layout))
        if added:
            data = as_layout([row for row, _ in added], iceberg.BatchLayout(tuple(names), images_schema(columns)))
            batches.append(
                iceberg.with_lineage(
                    data,
                    layout,
                    op=[e.op for _, e in added],
                    lsn=[e.commit_lsn for _, e in added],
                    load_ts=datetime.now(timezone.utc),
                    batch_id=properties["dw.batch-id"],
                    source_file=f"{self.source.name}:{shape.schema}.{shape.name}",
                )
            )
        self._append(tx, table, batches, properties)


def consumer_offsets(meta: ReplicationMeta, conn, statuses: dict[str, dict] | None = None) -> dict[str, int]:
    """Each topic's consumer offset: the last offset applied to its table (-1: none yet)."""
    statuses = meta.statuses() if statuses is None else statuses
    offsets = {}
    for topic, info in eventlog.topics_of(conn, meta.source).items():
        applied = (statuses.get(f"{info['schema']}.{info['table']}") or {}).get("applied_offset")
        offsets[topic] = -1 if applied is None else applied
    return offsets


def fold_by_key(events: list[LoggedEvent], key_cols: list[str]) -> tuple[dict, bool]:
    """The latest image per key after `events` (None: deleted), and whether a truncate came first.
    Events before the last truncate do not matter (the table is emptied). An update that changes
    the key deletes the old key. Unchanged TOAST values are taken from an earlier image of the key
    in the batch, or the update's old row; what is still missing stays UNAVAILABLE."""
    latest: dict[tuple, tuple[dict | None, LoggedEvent]] = {}
    truncated = False
    for event in events:
        if event.op == "t":
            latest.clear()
            truncated = True
        elif event.op == "d":
            latest[_key(event.before, key_cols)] = (None, event)
        else:
            after = dict(event.after)
            new_key = _key(after, key_cols)
            if event.op == "u" and event.before is not None and _key(event.before, key_cols) != new_key:
                latest[_key(event.before, key_cols)] = (None, event)
            previous = latest.get(new_key, (None, None))[0]
            for column, value in after.items():
                if value != UNAVAILABLE:
                    continue
                if previous is not None:
                    after[column] = previous.get(column, UNAVAILABLE)
                elif event.before is not None and event.before.get(column) not in (None, UNAVAILABLE):
                    after[column] = event.before[column]
            latest[new_key] = (after, event)
    return latest, truncated


def typed_keys(
    key_cols: list[str], keys: list[tuple], definitions: dict[str, SourceColumn], layout: iceberg.BatchLayout
) -> pa.Table:
    """Key tuples (text) as an Arrow table of the key columns' types in the Iceberg table."""
    import pyarrow as pa

    types = dict(zip(layout.names, (f.type for f in layout.schema)))
    return pa.table(
        {c: text_to_iceberg_array([k[i] for k in keys], definitions[c]).cast(types[c]) for i, c in enumerate(key_cols)}
    )


def _key(image: dict, key_cols: list[str]) -> tuple:
    return tuple(image.get(c) for c in key_cols)


def images_schema(columns) -> pa.Schema:
    """The Arrow schema of row images of Iceberg `columns` (names as in the table, no field ids)."""
    import pyarrow as pa

    from dw_platform.replication.typemap import arrow_type

    return pa.schema([pa.field(f.name, arrow_type(iceberg.column_of(f))) for f in columns])


def images_batch(columns, definitions: dict[str, SourceColumn], images: list[dict]):
    """Row images (column -> text) as one Arrow record batch of the source columns' Iceberg types;
    a column the source no longer has is null."""
    import pyarrow as pa

    arrays = []
    for f, target in zip(columns, images_schema(columns)):
        definition = definitions.get(f.name)
        if definition is None:
            arrays.append(pa.nulls(len(images), target.type))
        else:
            texts = [None if i.get(f.name) == UNAVAILABLE else i.get(f.name) for i in images]
            values = text_to_iceberg_array(texts, definition)
            arrays.append(values if values.type == target.type else values.cast(target.type))
    return pa.RecordBatch.from_arrays(arrays, schema=images_schema(columns))


def as_layout(rows: list[dict], layout: iceberg.BatchLayout):
    """Rows (by column name) as a record batch in a table's data-file layout."""
    import pyarrow as pa

    arrays = [pa.array([r.get(n) for r in rows], f.type) for n, f in zip(layout.names, layout.schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=layout.schema)


def as_text(value):
    """A lakehouse value as the text a change event carries, to fill an unchanged TOAST value
    (only text-like and binary columns are TOASTed)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)
