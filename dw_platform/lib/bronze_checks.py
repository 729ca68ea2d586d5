"""Data-quality checks every bronze table gets; each returns a result that can fail."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
from psycopg import sql

from dw_platform.lib.bronze import Batches, BronzeTable, LoadScope, append_key_index, missing_versions
from dw_platform.lib.landing import LandedFile, waiting_files

# How long a refused identical file keeps its check failing (it also stays in failed/ with its report).
IDENTICAL_FILES_WINDOW = timedelta(hours=24)


def run_scope(context: dg.AssetCheckExecutionContext, time_column: str) -> LoadScope | None:
    """The partition window the run covers, or None when the check runs on its own."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    window = context.partition_time_window
    return LoadScope.time_window(context.partition_keys, time_column, window.start, window.end)


def latest_loaded_scope(conn: psycopg.Connection, table: BronzeTable, time_column: str) -> LoadScope | None:
    """The window of the newest successful load of `table`, from the batch ledger."""
    if conn.execute("select to_regclass('bronze.batch_ledger')").fetchone()[0] is None:
        return None
    row = conn.execute(
        """
        select partition_key, window_start, window_end from bronze.batch_ledger
        where target_table = %s and status = 'succeeded' and window_start is not null
        order by finished_at desc limit 1
        """,
        (table.qualified_name,),
    ).fetchone()
    return LoadScope.time_window([row[0]], time_column, row[1], row[2]) if row else None


def expected_columns(conn: psycopg.Connection, table: BronzeTable) -> dg.AssetCheckResult:
    actual = [
        r[0]
        for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s"
            " order by ordinal_position",
            (table.schema, table.name),
        )
    ]
    expected = [c.name for c in table.all_columns]
    missing = [c for c in expected if c not in actual]
    unexpected = [c for c in actual if c not in expected]
    return dg.AssetCheckResult(
        passed=not missing and not unexpected,
        metadata={
            "missing_columns": ", ".join(missing) or "none",
            "unexpected_columns": ", ".join(unexpected) or "none",
        },
    )


def no_all_null_rows(
    conn: psycopg.Connection, table: BronzeTable, scope: LoadScope | None, ignore: tuple[str, ...] = ()
) -> dg.AssetCheckResult:
    """Fails when a row has no value in any source column; lineage and `ignore` columns aside
    (the partition column is always set, so it says nothing about the row)."""
    columns = [c for c in table.source_column_names if c not in ignore]
    query = sql.SQL("select count(*) from {} where num_nonnulls({}) = 0").format(
        table.ident, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    if scope is not None:
        query += sql.SQL(" and ") + scope.where
    count = conn.execute(query, scope.params if scope else None).fetchone()[0]
    return dg.AssetCheckResult(
        passed=count == 0,
        metadata={"all_null_rows": count, "scope": scope.label if scope else "whole table"},
    )


def source_versions_in_bronze(
    conn: psycopg.Connection,
    table: BronzeTable,
    scope: LoadScope | None,
    source_rows: Callable[[LoadScope], Batches],
) -> dg.AssetCheckResult:
    """Every row the source holds now for the window is a version bronze holds (bronze may hold
    more: versions the source has since changed are history, not surplus)."""
    if scope is None:
        return dg.AssetCheckResult(passed=True, metadata={"scope": "nothing loaded yet"})
    read, missing = missing_versions(conn, table, source_rows(scope))
    bronze_rows = conn.execute(
        sql.SQL("select count(*) from {} where ").format(table.ident) + scope.where, scope.params
    ).fetchone()[0]
    return dg.AssetCheckResult(
        passed=missing == 0,
        metadata={
            "source_rows": read,
            "source_rows_missing_in_bronze": missing,
            "bronze_versions": bronze_rows,
            "scope": scope.label,
        },
        description=None
        if missing == 0
        else f"{missing:,} source rows of {scope.label} are not in bronze: re-run "
        "the partition (a load only adds what is missing)",
    )


def files_not_waiting(
    files: Iterable[LandedFile], max_wait: timedelta, loaded: Callable[[LandedFile], bool] | None = None
) -> dg.AssetCheckResult:
    """Fails for files that arrived longer than `max_wait` ago and were not loaded since (a
    stopped sensor, runs failing or queued behind others, a day whose other files never came)."""
    files = list(files)
    stale = waiting_files(files, max_wait, datetime.now(timezone.utc), loaded)
    return dg.AssetCheckResult(
        passed=not stale,
        metadata={
            "files_waiting": len(files) if loaded is None else len(stale),
            "files_waiting_too_long": len(stale),
            "max_wait_minutes": max_wait.total_seconds() / 60,
            "oldest_wait_minutes": round(stale[0][1].total_seconds() / 60, 1) if stale else 0,
            "longest_waiting": ", ".join(f"{name} ({age.total_seconds() / 60:.0f} min)" for name, age in stale[:20]),
        },
    )


def no_identical_files(conn: psycopg.Connection, table: BronzeTable) -> dg.AssetCheckResult:
    """Fails (a warning) while files refused in the last IDENTICAL_FILES_WINDOW for holding the
    same bytes as a file loaded before are on record: a source sent something twice."""
    if conn.execute("select to_regclass('bronze.batch_ledger')").fetchone()[0] is None:
        return dg.AssetCheckResult(passed=True, metadata={"files_refused": 0})
    refused = conn.execute(
        "select partition_key, error from bronze.batch_ledger where target_table = %s and status = 'identical'"
        " and finished_at > now() - %s order by finished_at desc",
        (table.qualified_name, IDENTICAL_FILES_WINDOW),
    ).fetchall()
    return dg.AssetCheckResult(
        passed=not refused,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "files_refused": len(refused),
            "window_hours": IDENTICAL_FILES_WINDOW.total_seconds() / 3600,
            "refused": "\n".join(f"{key}: {error.split(': ', 1)[-1]}" for key, error in refused[:20]),
        },
    )


def latest_keys_scope(conn: psycopg.Connection, table: BronzeTable) -> LoadScope:
    """The keys the newest load of an append-by-key table added (the ledger's first_id..last_id),
    read through the key's unique index; nothing when no load has added a row."""
    row = conn.execute(
        "select partition_key, first_id, last_id from bronze.batch_ledger where target_table = %s"
        " and status = 'succeeded' and first_id is not null order by finished_at desc limit 1",
        (table.qualified_name,),
    ).fetchone()
    if row is None:
        return LoadScope(("nothing loaded",), sql.SQL("false"))
    key = sql.Identifier(table.append_key)
    where = sql.SQL("{} >= %(first_id)s and {} <= %(last_id)s").format(key, key)
    return LoadScope((f"{table.append_key} {row[1]}..{row[2]}",), where, {"first_id": row[1], "last_id": row[2]})


def append_key_unique(conn: psycopg.Connection, table: BronzeTable) -> dg.AssetCheckResult:
    """No key of an append-by-key table is there twice: its unique index exists and is valid, so
    PostgreSQL holds none twice (a catalog lookup, whatever the table's size)."""
    index = sql.Identifier(table.schema, append_key_index(table)).as_string(conn)
    row = conn.execute(
        "select indisunique and indisvalid from pg_index where indexrelid = to_regclass(%s)", (index,)
    ).fetchone()
    return dg.AssetCheckResult(
        passed=bool(row and row[0]), metadata={"unique_index": index, "enforced": bool(row and row[0])}
    )
