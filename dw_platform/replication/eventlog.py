"""The durable change event log in the warehouse: what Kafka topics hold in the Debezium design.

`bronze.cdc_events` holds one row per captured change, in a topic per source table
(`<source>.<schema>.<table>`) at an offset (0, 1, 2, ... per topic, in commit order), with its
position in the source's log (`commit_lsn` of its transaction and `seq` within it, unique per
source: the dedupe key), the change record's `lsn`, `op` (c, u, d, t) and the Debezium-shaped
envelope as JSONB (`before`, `after`, `source` {... lsn, txId, ts_ms, schema, table}, `op`,
`ts_ms`). `bronze.cdc_relations` keeps each distinct shape of a table (pgoutput's relation message:
columns, types, key flags) that events refer to; `bronze.cdc_topics` the next offset per topic;
`bronze.cdc_capture` how far each source's log goes and where the platform left the slot
(`slot_lsn`: the position it created the slot at or last advanced it to). Appends are recorded in `bronze.batch_ledger`
and the log position in `bronze.etl_watermarks` (key `replication:<source>`, `last_watermark_id`
= the LSN as a number), like every bronze load.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dw_platform.lib.bronze import BronzeTable, Column, ensure_bronze_objects

CDC_EVENTS = BronzeTable(
    "bronze",
    "cdc_events",
    (
        Column("source_name", "text", "The replication source (sources.yaml)."),
        Column("topic", "text", "<source>.<schema>.<table>: one topic per source table."),
        Column("offset", "bigint", "The event's position in its topic."),
        Column("commit_lsn", "pg_lsn", "LSN of the source transaction's commit."),
        Column("seq", "integer", "The change's place in its transaction."),
        Column("lsn", "pg_lsn", "LSN of the change itself."),
        Column("op", "text", "c (insert), u (update), d (delete) or t (truncate)."),
        Column("relation_id", "bigint", "The table's shape at the change (bronze.cdc_relations)."),
        Column("event", "jsonb", "The change, Debezium-shaped: before, after, source, op, ts_ms."),
    ),
)


def ensure_log(conn: psycopg.Connection) -> None:
    """The log's tables: dw_platform/migrations/0006_replication_event_log.sql (with the unique
    indexes a `BronzeTable` cannot declare), applied here if the warehouse lacks it."""
    ensure_bronze_objects(conn, CDC_EVENTS)


def topic_name(source: str, schema: str, table: str) -> str:
    return f"{source}.{schema}.{table}"


@dataclass(frozen=True, eq=False)
class RelationShape:
    """A table's shape as a relation message gives it, with each column's type resolved on the source."""

    relid: int
    schema: str
    name: str
    replica_identity: str
    columns: tuple[dict, ...]  # name, key, type_oid, typmod, source_type, base_type, base_typmod, category, domain

    @functools.cached_property
    def fingerprint(self) -> str:
        body = json.dumps([self.relid, self.schema, self.name, self.replica_identity, self.columns], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(c["name"] for c in self.columns if c["key"])


def register_relations(
    conn: psycopg.Connection, source: str, shapes: Iterable[tuple[RelationShape, int]]
) -> dict[str, int]:
    """Store each shape once (with the commit LSN it first appeared at); {fingerprint: relation_id}."""
    ids = {}
    for shape, first_lsn in shapes:
        row = conn.execute(
            """
            insert into bronze.cdc_relations (source_name, relid, schema_name, table_name, replica_identity,
                columns, fingerprint, first_commit_lsn)
            values (%s, %s, %s, %s, %s, %s, %s, %s::text::pg_lsn)
            on conflict (source_name, fingerprint) do update set source_name = excluded.source_name
            returning relation_id
            """,
            (
                source,
                shape.relid,
                shape.schema,
                shape.name,
                shape.replica_identity,
                json.dumps(shape.columns),
                shape.fingerprint,
                lsn_text(first_lsn),
            ),
        ).fetchone()
        ids[shape.fingerprint] = row[0]
    return ids


def relations(conn: psycopg.Connection, ids: Iterable[int]) -> dict[int, RelationShape]:
    rows = conn.execute(
        "select relation_id, relid, schema_name, table_name, replica_identity, columns "
        "from bronze.cdc_relations where relation_id = any(%s)",
        (list(ids),),
    ).fetchall()
    return {r[0]: RelationShape(r[1], r[2], r[3], r[4], tuple(r[5])) for r in rows}


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def next_offsets(conn: psycopg.Connection, source: str, topics: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Lock the topics' rows (creating missing ones) and return their next offsets, in this transaction."""
    for topic, (schema, table) in topics.items():
        conn.execute(
            "insert into bronze.cdc_topics (topic, source_name, schema_name, table_name) "
            "values (%s, %s, %s, %s) on conflict (topic) do nothing",
            (topic, source, schema, table),
        )
    rows = conn.execute(
        "select topic, next_offset from bronze.cdc_topics where topic = any(%s) order by topic for update",
        (list(topics),),
    ).fetchall()
    return dict(rows)


def record_slot(conn: psycopg.Connection, source: str, slot: str, lsn: int) -> None:
    """Where the platform left the slot (created it at, or is about to advance it to): a slot
    further on was moved by someone else (see `health.py`). Marks capture progress (updated_at)."""
    conn.execute(
        """
        insert into bronze.cdc_capture (source_name, slot_name, slot_lsn) values (%s, %s, %s::text::pg_lsn)
        on conflict (source_name) do update set slot_name = excluded.slot_name, slot_lsn = excluded.slot_lsn,
            updated_at = now()
        """,
        (source, slot, lsn_text(lsn)),
    )


@dataclass(frozen=True)
class CaptureMark:
    slot_name: str
    slot_lsn: int | None  # None: not recorded (a log written before slot positions were kept)
    updated_at: object  # datetime: the last time capture logged events or moved the slot


def capture_mark(conn: psycopg.Connection, source: str) -> CaptureMark | None:
    row = conn.execute(
        "select slot_name, slot_lsn - '0/0', updated_at from bronze.cdc_capture where source_name = %s", (source,)
    ).fetchone()
    return None if row is None else CaptureMark(row[0], None if row[1] is None else int(row[1]), row[2])


def log_end(conn: psycopg.Connection, source: str) -> tuple[int, int]:
    """The position (commit LSN, seq) of the last event logged for `source`; (0, -1) if none."""
    row = conn.execute(
        "select logged_commit_lsn - '0/0', logged_seq from bronze.cdc_capture where source_name = %s", (source,)
    ).fetchone()
    return (int(row[0]), row[1]) if row else (0, -1)


def topics_of(conn: psycopg.Connection, source: str) -> dict[str, dict]:
    """Every topic of `source`: {topic: {schema, table, next_offset}}."""
    rows = conn.execute(
        "select topic, schema_name, table_name, next_offset from bronze.cdc_topics where source_name = %s", (source,)
    ).fetchall()
    return {r[0]: {"schema": r[1], "table": r[2], "next_offset": r[3]} for r in rows}


@dataclass(frozen=True)
class LoggedEvent:
    offset: int
    commit_lsn: int
    seq: int
    op: str
    relation_id: int
    before: dict | None
    after: dict | None
    commit_ms: int
    captured_ms: int


def read_events(conn: psycopg.Connection, topic: str, after_offset: int, limit: int) -> list[LoggedEvent]:
    """Up to `limit` events of `topic` after `after_offset`, in offset order."""
    rows = conn.execute(
        """
        select "offset", commit_lsn - '0/0', seq, op, relation_id, event->'before', event->'after',
               (event->'source'->>'ts_ms')::bigint, (event->>'ts_ms')::bigint
        from bronze.cdc_events where topic = %s and "offset" > %s order by "offset" limit %s
        """,
        (topic, after_offset, limit),
    ).fetchall()
    return [LoggedEvent(r[0], int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]


def drop_applied(conn: psycopg.Connection, applied: dict[str, int], older_than_hours: float) -> int:
    """Retention: delete events every consumer has applied (offset <= applied[topic]) that were
    captured more than `older_than_hours` ago. Offsets keep counting from cdc_topics."""
    deleted = 0
    for topic, offset in applied.items():
        deleted += conn.execute(
            sql.SQL(
                'delete from bronze.cdc_events where topic = %s and "offset" <= %s '
                "and _bronze_load_ts < now() - make_interval(secs => %s)"
            ),
            (topic, offset, older_than_hours * 3600),
        ).rowcount
    return deleted


@dataclass(frozen=True)
class Backlog:
    """Events of a topic not applied yet."""

    topic: str
    events: int
    oldest_captured_at: object  # datetime
    oldest_commit_ms: int


def backlog(conn: psycopg.Connection, source: str, applied: dict[str, int]) -> list[Backlog]:
    """Per topic of `source`, the events after its applied offset (`applied`; -1 when none)."""
    out = []
    for topic in topics_of(conn, source):
        row = conn.execute(
            """select count(*), min(_bronze_load_ts), min((event->'source'->>'ts_ms')::bigint)
               from bronze.cdc_events where topic = %s and "offset" > %s""",
            (topic, applied.get(topic, -1)),
        ).fetchone()
        if row[0]:
            out.append(Backlog(topic, row[0], row[1], row[2]))
    return out
