"""Row counts of a partitioned table's materializations, named as Dagster names them:
`dagster/partition_row_count` is the partition's rows, `dagster/row_count` the whole table's
(every partition), which the UI shows as the asset's "Row count".

A single-run backfill materializes every partition of its range with one result;
`record_daily_row_counts` counts a table's rows per day of its partition column and attaches the
count to each partition's materialization.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import dagster as dg
import psycopg
from psycopg import sql


def rows_per_day(
    conn: psycopg.Connection, table: str, column: str, start: datetime, end: datetime, batch_id: str | None = None
) -> dict[str, tuple[int, int]]:
    """{day (YYYY-MM-DD): (rows, rows of `batch_id`)} for rows whose `column` is in [start, end)."""
    schema, name = table.split(".")
    added = sql.SQL("count(*) filter (where _bronze_batch_id = %(batch)s)") if batch_id else sql.SQL("0")
    query = sql.SQL(
        "select {col}::date::text, count(*), {added} from {table} "
        "where {col} >= %(start)s and {col} < %(end)s group by 1"
    ).format(col=sql.Identifier(column), added=added, table=sql.Identifier(schema, name))
    params = {"start": _naive_utc(start), "end": _naive_utc(end), "batch": batch_id}
    return {day: (rows, new) for day, rows, new in conn.execute(query, params).fetchall()}


def record_daily_row_counts(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    partition_keys: Sequence[str],
    counts: dict[str, tuple[int, int]],
    loaded_label: str | None = None,
) -> None:
    """Give each partition of the run its own `dagster/partition_row_count` (and, with
    `loaded_label`, the rows this run added to it)."""
    for key in partition_keys:
        rows, added = counts.get(key, (0, 0))
        metadata = {"dagster/partition_row_count": rows, **({loaded_label: added} if loaded_label else {})}
        context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)


# Above this many rows (by the planner's statistics) a table's row count is the planner's estimate:
# counting every row after each partition would cost what the whole history costs.
EXACT_COUNT_LIMIT = 1_000_000


def table_rows(conn: psycopg.Connection, table: str) -> dict[str, int | bool]:
    """`dagster/row_count` of a table (schema.name): its rows, or above `EXACT_COUNT_LIMIT` the
    planner's estimate, marked `row_count_estimated`. The estimate is the sum over the table's
    leaves (its range partitions, or the table itself): autovacuum analyzes partitions, never a
    partitioned parent, whose own estimate stays unknown. A leaf not analyzed yet (a month
    partition just made, a table just built) is counted."""
    ident = sql.Identifier(*table.split("."))
    name = ident.as_string(conn)
    if conn.execute("select to_regclass(%s)", (name,)).fetchone()[0] is None:
        return {"dagster/row_count": 0}  # not created yet (a table made on a first document that has its field)
    leaves = conn.execute(  # pg_partition_tree lists nothing for a table without partitions
        "select c.oid::regclass::text, c.reltuples::bigint from pg_class c where c.relkind <> 'p' and "
        "(c.oid = to_regclass(%(t)s) or c.oid in (select relid from pg_partition_tree(to_regclass(%(t)s))))",
        {"t": name},
    ).fetchall()
    count = "select count(*) from {}"
    analyzed = [rows for _, rows in leaves if rows >= 0]
    counted = sum(conn.execute(sql.SQL(count).format(sql.SQL(leaf))).fetchone()[0] for leaf, rows in leaves if rows < 0)
    if not analyzed:
        return {"dagster/row_count": counted}
    if sum(analyzed) + counted > EXACT_COUNT_LIMIT:
        return {"dagster/row_count": sum(analyzed) + counted, "row_count_estimated": True}
    return {"dagster/row_count": conn.execute(sql.SQL(count).format(ident)).fetchone()[0]}


def partition_and_table_rows(conn: psycopg.Connection, table: str, partition_rows: int) -> dict[str, int | bool]:
    """A one-partition materialization's row counts: the partition's and the whole table's."""
    return {"dagster/partition_row_count": partition_rows, **table_rows(conn, table)}


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
