"""Bronze tables that grow by time, range-partitioned in PostgreSQL and partitions made on demand.

A table with `RangePartitions(column)` is partitioned by range of that column, one partition per
month (or day). Before a load, `ensure_partitions` creates those its read window needs, in a short
transaction of its own: each is created as a plain table, then attached, which takes only a SHARE
UPDATE EXCLUSIVE lock on the parent (readers and loads of other partitions go on). A window
without a start (a history load: everything before the first partition) gets one `_history`
partition from MINVALUE up to the lowest partition there is. Rows whose column is NULL go to the
default partition, `_undated`, whose CHECK (column is null) keeps every dated row out of it, so
attaching a partition never has to scan it; a dated row outside every partition fails its load
(`violates check constraint "<table>_undated_holds_only_rows_without_<column>"`) instead of
landing where it would block one.

A load, a check or a dbt model that filters on the column touches only its partitions (plan-time
pruning), so a day's cost does not grow with the years before it.

`set_aside_unpartitioned` and `move_into_partitions` are the two steps of the one-time move of a
table of the earlier, unpartitioned shape (the loader runs and records it, see bronze.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

import psycopg
from psycopg import sql

DDL_LOCK = "select pg_advisory_xact_lock(hashtextextended('dw_platform.bronze_ddl', 0))"
PARTITION_MIGRATION = "range partitions"


@dataclass(frozen=True)
class RangePartitions:
    """Partition a bronze table by `column` (a date or timestamp), one partition per `interval`."""

    column: str
    interval: Literal["month", "day"] = "month"

    def floor(self, moment: datetime | date) -> datetime:
        day = moment.date() if isinstance(moment, datetime) else moment
        return datetime.combine(day.replace(day=1) if self.interval == "month" else day, time())

    def following(self, start: datetime) -> datetime:
        if self.interval == "day":
            return start + timedelta(days=1)
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)

    def suffix(self, start: datetime) -> str:
        return start.strftime("p%Y_%m" if self.interval == "month" else "p%Y_%m_%d")


def create_partitioned(
    conn: psycopg.Connection, schema: str, name: str, columns: sql.Composable, spec: RangePartitions
) -> None:
    """The partitioned table with its `_undated` default partition (rows whose column is NULL)."""
    table = sql.Identifier(schema, name)
    conn.execute(
        sql.SQL("create table {} ({}) partition by range ({})").format(table, columns, sql.Identifier(spec.column))
    )
    conn.execute(
        sql.SQL("create table {} partition of {} (constraint {} check ({} is null)) default").format(
            sql.Identifier(schema, f"{name}_undated"),
            table,
            sql.Identifier(f"{name}_undated_holds_only_rows_without_{spec.column}"),
            sql.Identifier(spec.column),
        )
    )


def is_partitioned(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return bool(
        conn.execute(
            "select c.relkind = 'p' from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname = %s",
            (schema, name),
        ).fetchone()[0]
    )


def bounds(conn: psycopg.Connection, schema: str, name: str) -> list[tuple[datetime | None, datetime]]:
    """The [from, to) ranges of the table's range partitions (None for MINVALUE), lowest first."""
    rows = conn.execute(
        """
        select pg_get_expr(c.relpartbound, c.oid)
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = (select p.oid from pg_class p join pg_namespace n on n.oid = p.relnamespace
                             where n.nspname = %s and p.relname = %s)
          and pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
        """,
        (schema, name),
    ).fetchall()
    found = []
    for (bound,) in rows:
        low, high = bound.removeprefix("FOR VALUES FROM (").removesuffix(")").split(") TO (")
        found.append((None if low == "MINVALUE" else _literal(low), _literal(high)))
    return sorted(found, key=lambda b: b[0] or datetime.min)


def _literal(text: str) -> datetime:
    return datetime.fromisoformat(text.strip("'"))


def missing_partitions(
    existing: list[tuple[datetime | None, datetime]],
    spec: RangePartitions,
    start: datetime | None,
    end: datetime,
    history_until: datetime | None = None,
) -> list[tuple[datetime | None, datetime]]:
    """The partitions rows in [start, end) need beyond `existing`: one per interval not covered,
    and for a window without a start, a history partition from MINVALUE up to the interval of
    `history_until` (default: of `end`), or to the lowest partition there is if that is lower."""
    wanted: list[tuple[datetime | None, datetime]] = []
    if start is None:
        lowest = [low for low, _ in existing]
        first = min([spec.floor(history_until or end)] + [low for low in lowest if low is not None])
        if None not in lowest:
            wanted.append((None, first))
        start = first
    covered = existing + wanted
    at = spec.floor(start)
    while at < end:
        if not any((low is None or low <= at) and at < high for low, high in covered):
            wanted.append((at, spec.following(at)))
        at = spec.following(at)
    return wanted


def ensure_partitions(
    conn: psycopg.Connection,
    schema: str,
    name: str,
    spec: RangePartitions,
    start: datetime | None,
    end: datetime,
    history_until: datetime | None = None,
) -> list[str]:
    """Create the partitions rows with `spec.column` in [start, end) need (see `missing_partitions`),
    each created empty and then attached; returns their names. Looked up first without DDL, then
    again under the bronze DDL lock (another load may have created them meanwhile). `conn` must be
    in autocommit mode and outside a transaction (the partitions commit at once)."""
    if not missing_partitions(bounds(conn, schema, name), spec, start, end, history_until):
        return []
    created = []
    with conn.transaction():
        conn.execute(DDL_LOCK)
        for low, high in missing_partitions(bounds(conn, schema, name), spec, start, end, history_until):
            part = f"{name}_{'history' if low is None else spec.suffix(low)}"
            conn.execute(
                sql.SQL("create table {} (like {} including defaults)").format(
                    sql.Identifier(schema, part), sql.Identifier(schema, name)
                )
            )
            conn.execute(
                sql.SQL("alter table {} attach partition {} for values from ({}) to ({})").format(
                    sql.Identifier(schema, name),
                    sql.Identifier(schema, part),
                    sql.SQL("minvalue") if low is None else sql.Literal(low),
                    sql.Literal(high),
                )
            )
            created.append(part)
    return created


def set_aside_unpartitioned(conn: psycopg.Connection, schema: str, name: str) -> sql.Identifier:
    """Step one of the move of an unpartitioned table (inside the caller's transaction, under
    the DDL lock): lock it, rename it to `<name>_unpartitioned` and drop its indexes (their names
    belong to the new table now). Returns its new name."""
    aside = f"{name}_unpartitioned"
    conn.execute(sql.SQL("lock table {} in access exclusive mode").format(sql.Identifier(schema, name)))
    conn.execute(sql.SQL("alter table {} rename to {}").format(sql.Identifier(schema, name), sql.Identifier(aside)))
    for (index,) in conn.execute(
        "select indexname from pg_indexes where schemaname = %s and tablename = %s", (schema, aside)
    ).fetchall():
        conn.execute(sql.SQL("drop index {}").format(sql.Identifier(schema, index)))
    return sql.Identifier(schema, aside)


def move_into_partitions(
    conn: psycopg.Connection,
    old: sql.Identifier,
    source: sql.Composable,
    select: sql.Composable,
    schema: str,
    name: str,
    spec: RangePartitions,
    columns: list[str],
) -> int:
    """Step two (same transaction, the new partitioned table created meanwhile): partitions for
    every interval the old rows fall in, then `select` of `source` (the old table, or a query over
    it) into `columns` of the new table, counted on both sides, and the old table dropped. Returns
    the rows moved; a count that differs fails the move, and with it the whole transaction."""
    low, high = conn.execute(
        sql.SQL("select min({c}), max({c}) from {t}").format(c=sql.Identifier(spec.column), t=old)
    ).fetchone()
    if low is not None:
        wanted = missing_partitions(bounds(conn, schema, name), spec, spec.floor(low), spec.following(spec.floor(high)))
        for start, end in wanted:
            conn.execute(
                sql.SQL("create table {} partition of {} for values from ({}) to ({})").format(
                    sql.Identifier(schema, f"{name}_{spec.suffix(start)}"),
                    sql.Identifier(schema, name),
                    sql.Literal(start),
                    sql.Literal(end),
                )
            )
    expected = conn.execute(sql.SQL("select count(*) from {} s").format(source)).fetchone()[0]
    moved = conn.execute(
        sql.SQL("insert into {} ({}) select {} from {} s").format(
            sql.Identifier(schema, name), sql.SQL(", ").join(sql.Identifier(c) for c in columns), select, source
        )
    ).rowcount
    if moved != expected:
        raise RuntimeError(f"moving {old.as_string(conn)} into partitions: {expected} rows, {moved} moved")
    conn.execute(sql.SQL("drop table {}").format(old))
    return moved
