"""Change data capture: the source's logical replication slot -> the event log in the warehouse.

The slot is read with `pg_logical_slot_peek_binary_changes` (pgoutput, protocol 1, the source's
publication) over a plain SQL connection: peeking does not move the slot, so the changes of a
batch stay in it until the log transaction that holds them has committed; only then does
`pg_replication_slot_advance` move the slot past them (the log transaction records where the slot
will be, `bronze.cdc_capture.slot_lsn`: a slot further on was moved by someone else). A crash
between the two re-reads the same changes next time, and the log drops every change at or before
its last logged position (commit LSN, sequence in the transaction): decoding is deterministic, so
nothing is doubled or lost.
Why peek + advance rather than the streaming replication protocol: a capture run is a bounded
batch job (Dagster launches it); peek gives exactly "read N changes, commit, then confirm" on the
project's driver (psycopg 3) without a long-lived walsender, and `upto_nchanges` bounds a batch at
a transaction boundary. The cost is that each peek decodes from the slot's restart position again.

When the slot has nothing for us but the server's WAL moved on (other databases, unpublished
activity), a transactional heartbeat message (`pg_logical_emit_message`) gives the slot a
position to advance to, so it does not pin WAL (Debezium's heartbeat).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.replication import eventlog, pgoutput
from dw_platform.replication.eventlog import CDC_EVENTS, RelationShape, lsn_text, topic_name
from dw_platform.replication.postgres import TEXT_OUTPUT_SETTINGS, PostgresExtractor
from dw_platform.replication.sources import SourceConfig

PEEK = (
    "select lsn - '0/0', data from pg_logical_slot_peek_binary_changes(%s, null, %s, 'proto_version', '1', "
    "'publication_names', %s, 'messages', 'true')"
)
# The first message the slot has for us (a transaction's Begin, with its commit time): decodes up to
# the first transaction that produces output.
FIRST_PENDING = (
    "select data from pg_logical_slot_peek_binary_changes(%s, null, 1, 'proto_version', '1', "
    "'publication_names', %s, 'messages', 'true') limit 1"
)
HEARTBEAT_PREFIX = "dw_platform.heartbeat"
UNAVAILABLE = "__debezium_unavailable_value"  # Debezium's placeholder for an unchanged TOAST value
OPS = {pgoutput.Insert: "c", pgoutput.Update: "u", pgoutput.Delete: "d"}
# A test seam: called after the log transaction committed and before the slot is advanced.
AFTER_LOG_COMMIT: Callable[[], None] | None = None

TYPE_QUERY = """
select t.oid, %(typmod)s::int, format_type(t.oid, %(typmod)s), coalesce(bt.typname, t.typname)::text,
       case when t.typtype = 'd' then t.typtypmod else %(typmod)s end, coalesce(bt.typcategory, t.typcategory)::text,
       t.typtype = 'd'
from pg_type t left join pg_type bt on t.typtype = 'd' and bt.oid = t.typbasetype
where t.oid = %(oid)s
"""


@dataclass(frozen=True)
class SlotState:
    confirmed_lsn: str  # how far the slot's consumer (this capture) has confirmed
    lag_bytes: int  # WAL the server has written past it
    wal_status: str  # reserved / extended / unreserved / lost (invalidated: re-seed)
    active: bool  # a session is reading it now


@dataclass
class CaptureResult:
    transactions: int = 0
    events: int = 0
    duplicates: int = 0  # already in the log (re-read after a crash between log commit and slot advance)
    per_topic: Counter = field(default_factory=Counter)
    per_op: Counter = field(default_factory=Counter)
    confirmed_lsn: str = ""
    lag_bytes: int = 0
    heartbeats: int = 0
    seconds: float = 0.0
    capture_seconds: float = 0.0  # of `seconds`, the time spent capturing (the rest: applying)

    def add(self, other: CaptureResult) -> None:
        self.transactions += other.transactions
        self.events += other.events
        self.duplicates += other.duplicates
        self.per_topic.update(other.per_topic)
        self.per_op.update(other.per_op)
        self.heartbeats += other.heartbeats


class Capture:
    """Reads one source's slot into the event log, batch by batch."""

    def __init__(
        self,
        source: SourceConfig,
        warehouse: PostgresWarehouse,
        *,
        run_id: str | None = None,
        log: Callable[[str], None] = lambda _m: None,
        heartbeat_after_bytes: int = 16 << 20,
    ):
        self.source = source
        self.warehouse = warehouse
        self.extractor = PostgresExtractor(source)
        self.run_id = run_id
        self.log = log
        self.heartbeat_after_bytes = heartbeat_after_bytes
        self._types: dict[tuple[int, int], dict] = {}

    def run(self, batch_changes: int, time_budget_s: float = 60.0) -> CaptureResult:
        """Capture batches until the slot is drained or the time budget is spent."""
        total = CaptureResult()
        started = time.perf_counter()
        heartbeat_sent = False
        while True:
            batch = self.capture_batch(batch_changes)
            total.add(batch)
            total.confirmed_lsn, total.lag_bytes = batch.confirmed_lsn, batch.lag_bytes
            drained = batch.transactions == 0
            if drained and not heartbeat_sent and batch.lag_bytes >= self.heartbeat_after_bytes:
                self.heartbeat()
                heartbeat_sent = True
                total.heartbeats += 1
                continue
            if drained or time.perf_counter() - started > time_budget_s:
                break
        total.seconds = time.perf_counter() - started
        return total

    def heartbeat(self) -> None:
        with self.extractor.connect() as conn:
            conn.execute("select pg_logical_emit_message(true, %s, now()::text)", (HEARTBEAT_PREFIX,))

    def oldest_pending(self) -> datetime | None:
        """The commit time of the first transaction the slot holds for the publication, None when
        it holds none (a peek of one transaction; raises if another session is using the slot)."""
        with self.extractor.connect() as conn:
            row = conn.execute(FIRST_PENDING, (self.source.slot, self.source.publication)).fetchone()
        if row is None:
            return None
        first = pgoutput.decode(row[0])
        return first.commit_time if isinstance(first, pgoutput.Begin) else datetime.now(timezone.utc)

    def has_pending_changes(self) -> bool:
        """Whether the slot holds at least one change for the publication."""
        return self.oldest_pending() is not None

    def find_slot(self) -> SlotState | None:
        """The slot as the source shows it; None when it does not exist."""
        with self.extractor.connect() as conn:
            row = conn.execute(
                "select confirmed_flush_lsn::text, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                "confirmed_flush_lsn), 0)::bigint, coalesce(wal_status, ''), active "
                "from pg_replication_slots where slot_name = %s",
                (self.source.slot,),
            ).fetchone()
        return None if row is None else SlotState(row[0] or "", int(row[1]), row[2], row[3])

    def slot_state(self) -> SlotState:
        state = self.find_slot()
        if state is None:
            raise LookupError(
                f"replication slot {self.source.slot!r} does not exist on the source: "
                "bulk-load the source first (it creates the slot)"
            )
        return state

    def capture_batch(self, limit: int) -> CaptureResult:
        """One peek of up to `limit` changes (whole transactions), logged, then the slot advanced."""
        result = CaptureResult()
        with self.warehouse.connect() as wh:
            eventlog.ensure_log(wh)
            logged = eventlog.log_end(wh, self.source.name)
            spool = tempfile.SpooledTemporaryFile(max_size=32 << 20, mode="w+", encoding="utf-8")
            with self.extractor.connect() as src:
                with src.transaction():
                    for setting, value in TEXT_OUTPUT_SETTINGS.items():
                        src.execute(f"set local {setting} = {sql.quote(value)}")
                    decoded = self._decode(src, limit, logged, spool, result)
            if decoded.end_lsn is not None:
                self._append(wh, decoded, spool, result)
                if AFTER_LOG_COMMIT is not None:
                    AFTER_LOG_COMMIT()
                with self.extractor.connect() as src:
                    src.execute(
                        "select pg_replication_slot_advance(%s, %s::text::pg_lsn)",
                        (self.source.slot, lsn_text(decoded.end_lsn)),
                    )
            spool.close()
        state = self.slot_state()
        result.confirmed_lsn, result.lag_bytes = state.confirmed_lsn, state.lag_bytes
        return result

    def _decode(self, src: psycopg.Connection, limit: int, logged: tuple[int, int], spool, result: CaptureResult):
        decoded = _Decoded()
        relations: dict[int, tuple[RelationShape, bool, str]] = {}  # relid -> shape, selected, topic
        begin = None
        seq = 0
        captured_ms = int(time.time() * 1000)
        with src.cursor(name="dw_capture_peek") as cur:
            cur.itersize = 5000
            cur.execute(PEEK, (self.source.slot, limit, self.source.publication))
            for change_lsn, data in cur:
                message = pgoutput.decode(data)
                kind = type(message)
                if kind is pgoutput.Begin:
                    begin, seq = message, 0
                elif kind is pgoutput.Commit:
                    decoded.end_lsn = message.end_lsn
                    result.transactions += 1
                elif kind is pgoutput.Relation:
                    shape = self._shape(src, message)
                    relations[message.relid] = (
                        shape,
                        self.source.selects(shape.schema, shape.name),
                        topic_name(self.source.name, shape.schema, shape.name),
                    )
                elif kind in OPS or kind is pgoutput.Truncate:
                    relids = message.relids if kind is pgoutput.Truncate else (message.relid,)
                    for relid in relids:
                        shape, selected, topic = relations[relid]
                        position = (begin.final_lsn, seq)
                        seq += 1
                        if not selected:
                            continue
                        if position <= logged:
                            result.duplicates += 1
                            continue
                        op = "t" if kind is pgoutput.Truncate else OPS[kind]
                        event = envelope(
                            self.source.name, shape, op, message, begin, int(change_lsn), seq - 1, captured_ms
                        )
                        spool.write(
                            "\t".join(
                                (
                                    json.dumps(topic),
                                    str(begin.final_lsn),
                                    str(seq - 1),
                                    str(int(change_lsn)),
                                    op,
                                    shape.fingerprint,
                                    json.dumps(event),
                                )
                            )
                            + "\n"
                        )
                        decoded.topics[topic] = (shape.schema, shape.name)
                        decoded.shapes.setdefault(shape.fingerprint, (shape, begin.final_lsn))
                        decoded.last_position = position
                        result.events += 1
                        result.per_topic[topic] += 1
                        result.per_op[op] += 1
        return decoded

    def _shape(self, src: psycopg.Connection, relation: pgoutput.Relation) -> RelationShape:
        columns = []
        for c in relation.columns:
            info = self._types.get((c.type_oid, c.typmod))
            if info is None:
                row = src.execute(TYPE_QUERY, {"oid": c.type_oid, "typmod": c.typmod}).fetchone()
                info = (
                    {
                        "source_type": row[2],
                        "base_type": row[3],
                        "base_typmod": row[4],
                        "category": row[5],
                        "domain": row[6],
                    }
                    if row
                    else {
                        "source_type": f"oid {c.type_oid}",
                        "base_type": "unknown",
                        "base_typmod": -1,
                        "category": "U",
                        "domain": False,
                    }
                )
                self._types[(c.type_oid, c.typmod)] = info
            columns.append({"name": c.name, "key": c.key, "type_oid": c.type_oid, "typmod": c.typmod, **info})
        return RelationShape(relation.relid, relation.schema, relation.name, relation.replica_identity, tuple(columns))

    def _append(self, wh: psycopg.Connection, decoded: _Decoded, spool, result: CaptureResult) -> None:
        """One warehouse transaction: relations, topics' offsets, the events, the log position, the
        watermark and the ledger entry."""
        batch_id = uuid.uuid4()
        now = datetime.now(timezone.utc)
        source_file = f"{self.source.name}:slot {self.source.slot}"
        with wh.transaction():
            wh.execute(
                "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"dw_platform.replication.capture:{self.source.name}",),
            )
            ids = eventlog.register_relations(wh, self.source.name, decoded.shapes.values())
            offsets = eventlog.next_offsets(wh, self.source.name, decoded.topics)
            spool.seek(0)
            columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in CDC_EVENTS.all_columns)
            with wh.cursor().copy(sql.SQL("copy bronze.cdc_events ({}) from stdin").format(columns)) as copy:
                for line in spool:
                    topic, commit_lsn, seq, change_lsn, op, fingerprint, event = line.rstrip("\n").split("\t", 6)
                    topic = json.loads(topic)
                    copy.write_row(
                        (
                            self.source.name,
                            topic,
                            offsets[topic],
                            lsn_text(int(commit_lsn)),
                            int(seq),
                            lsn_text(int(change_lsn)),
                            op,
                            ids[fingerprint],
                            event,
                            now,
                            batch_id,
                            source_file,
                        )
                    )
                    offsets[topic] += 1
            for topic, offset in offsets.items():
                wh.execute(
                    "update bronze.cdc_topics set next_offset = %s, updated_at = now() where topic = %s",
                    (offset, topic),
                )
            eventlog.record_slot(wh, self.source.name, self.source.slot, decoded.end_lsn)
            if decoded.last_position is not None:
                commit_lsn, seq = decoded.last_position
                wh.execute(
                    """
                    update bronze.cdc_capture set logged_commit_lsn = %s::text::pg_lsn, logged_seq = %s,
                        events_logged = events_logged + %s
                    where source_name = %s
                    """,
                    (lsn_text(commit_lsn), seq, result.events, self.source.name),
                )
            wh.execute(
                """
                insert into bronze.etl_watermarks (watermark_key, last_watermark_id, last_run_ts, records_extracted,
                    last_partition_key)
                values (%s, %s, clock_timestamp(), %s, %s)
                on conflict (watermark_key) do update set
                    last_watermark_id = greatest(bronze.etl_watermarks.last_watermark_id, excluded.last_watermark_id),
                    last_run_ts = excluded.last_run_ts,
                    records_extracted = bronze.etl_watermarks.records_extracted + excluded.records_extracted,
                    last_partition_key = excluded.last_partition_key
                """,
                (f"replication:{self.source.name}", decoded.end_lsn, result.events, self.source.slot),
            )
            wh.execute(
                """
                insert into bronze.batch_ledger (batch_id, asset_key, target_table, partition_key, source,
                    rows_read, rows_loaded, status, dagster_run_id, started_at, finished_at)
                values (%s, %s, 'bronze.cdc_events', %s, %s, %s, %s, 'succeeded', %s, %s, clock_timestamp())
                """,
                (
                    batch_id,
                    f"bronze/cdc_events/{self.source.name}",
                    self.source.name,
                    source_file,
                    result.events + result.duplicates,
                    result.events,
                    self.run_id,
                    now,
                ),
            )


@dataclass
class _Decoded:
    end_lsn: int | None = None  # the end of the last complete transaction read: where the slot may go
    last_position: tuple[int, int] | None = None  # (commit LSN, seq) of the last event logged
    topics: dict[str, tuple[str, str]] = field(default_factory=dict)
    shapes: dict[str, tuple[RelationShape, int]] = field(default_factory=dict)


def _values(shape: RelationShape, values: tuple | None) -> dict | None:
    if values is None:
        return None
    return {c["name"]: (UNAVAILABLE if v is pgoutput.UNCHANGED_TOAST else v) for c, v in zip(shape.columns, values)}


def envelope(
    source: str,
    shape: RelationShape,
    op: str,
    message,
    begin: pgoutput.Begin,
    change_lsn: int,
    seq: int,
    captured_ms: int,
) -> dict:
    """The Debezium-shaped change event (payload part): before, after, source, op, ts_ms, transaction."""
    before = after = None
    if isinstance(message, pgoutput.Insert):
        after = _values(shape, message.new)
    elif isinstance(message, pgoutput.Update):
        before, after = _values(shape, message.old), _values(shape, message.new)
    elif isinstance(message, pgoutput.Delete):
        before = _values(shape, message.old)
    commit_ms = int(begin.commit_time.timestamp() * 1000)
    return {
        "before": before,
        "after": after,
        "source": {
            "version": "dw_platform",
            "connector": "postgresql",
            "name": source,
            "ts_ms": commit_ms,
            "snapshot": "false",
            "schema": shape.schema,
            "table": shape.name,
            "txId": begin.xid,
            "lsn": change_lsn,
            "sequence": json.dumps([str(begin.final_lsn), str(change_lsn)]),
        },
        "op": op,
        "ts_ms": captured_ms,
        "transaction": {"id": f"{begin.xid}:{begin.final_lsn}", "total_order": seq + 1},
    }
