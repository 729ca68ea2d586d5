"""Each daily partition's own row count, for runs that cover a range of days at once.

A single-run backfill materializes every partition of its range with one result; without this,
each partition would show the range's total. `record_daily_row_counts` counts a table's rows per
day of its partition column and attaches the count to each partition's materialization.
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
    """Give each partition of the run its own `dagster/row_count` (and, with `loaded_label`, the rows
    this run added to it)."""
    for key in partition_keys:
        rows, added = counts.get(key, (0, 0))
        metadata = {"dagster/row_count": rows, **({loaded_label: added} if loaded_label else {})}
        context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
