"""Bronze checks for the video domain; all are errors and block what is built on the tables.

In a run they check the run's arrival day; run on their own, the day loaded last.
Every table: its landed file exists and is readable (and for CSV, loaded + quarantined rows =
the file's data lines), the day is not empty, the columns are the expected ones, no row is
empty in every source column.
"""

import os
from datetime import timedelta

import dagster as dg
from psycopg import sql

from dw_platform.defs.video.partitions import CONTENT_FILE, FAILED, SESSIONS_FILE, USERS_FILE, landed_path
from dw_platform.lib import bronze_checks, migrations
from dw_platform.lib.bronze import BronzeTable, Column, LoadScope
from dw_platform.lib.compression import CompressionError, plain_name
from dw_platform.lib.csv_stream import CsvFormatError, count_records
from dw_platform.lib.json_flatten import DocumentError
from dw_platform.lib.landing import LandedFile, LandingZone
from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.video.ingest import (
    CONTENT_BASE,
    PARENT,
    SESSIONS,
    SESSIONS_SCHEMA,
    USERS,
    USERS_SCHEMA,
    arrived_uri,
    day_chunks,
    day_file,
    documents,
)


def _scope(context: dg.AssetCheckExecutionContext, conn, table: BronzeTable) -> LoadScope | None:
    return bronze_checks.run_scope(context, "arrival_date") or (
        bronze_checks.latest_loaded_scope(conn, table, "arrival_date") if _ledger_exists(conn) else None
    )


def _ledger_exists(conn) -> bool:
    return conn.execute("select to_regclass('bronze.batch_ledger') is not null").fetchone()[0]


def _table_exists(conn, table: BronzeTable) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (table.qualified_name,)).fetchone()[0]


def content_table(conn) -> BronzeTable:
    """bronze.content with the columns the schema-change log says it has gained."""
    added = conn.execute(
        "select column_name, pg_type from bronze.video_schema_changes where table_name = 'bronze.content'"
        " order by added_at, column_name"
    ).fetchall()
    return BronzeTable("bronze", PARENT, (*CONTENT_BASE, *(Column(c, t) for c, t in added)))


def file_readable(
    landing: LandingZone, conn, table: BronzeTable, scope: LoadScope | None, file_name: str, csv: bool
) -> dg.AssetCheckResult:
    """Each day of the scope (one, or a run's range): its file is there and readable, and every
    record in it was loaded or quarantined."""
    if scope is None:
        return dg.AssetCheckResult(passed=True, metadata={"scope": "nothing loaded yet"})
    days = [_file_of_day(landing, conn, table, day, file_name, csv) for day in scope.partition_keys]
    if len(days) == 1:
        return dg.AssetCheckResult(passed=days[0][0], metadata=days[0][1])
    failed = [(day, meta) for day, (ok, meta) in zip(scope.partition_keys, days) if not ok]
    return dg.AssetCheckResult(
        passed=not failed,
        metadata={
            "days": len(days),
            "days_failed": len(failed),
            "problems": "; ".join(f"{day}: {meta.get('problem', meta)}" for day, meta in failed[:20]) or "none",
        },
    )


def _file_of_day(landing: LandingZone, conn, table: BronzeTable, day: str, file_name: str, csv: bool) -> tuple:
    zone = landing.landing()
    try:
        found = day_file(zone, day, file_name)
    except ValueError as exc:
        return False, {"file": file_name, "problem": str(exc)}
    if found is None:
        return False, {"file": landed_path(day, file_name), "problem": "the file is not in the landing zone"}
    try:
        if csv:
            lines = count_records(day_chunks(zone, found))
        else:
            lines = sum(1 for _ in documents(b"".join(day_chunks(zone, found))))
    except (CsvFormatError, CompressionError, DocumentError, OSError) as exc:
        return False, {"file": found.uri, "problem": f"unreadable: {exc}"}
    loaded = conn.execute(
        sql.SQL("select count(*) from {} where _bronze_source_file = %s").format(table.ident), (arrived_uri(found),)
    ).fetchone()[0]
    quarantined = conn.execute(
        "select count(*) from bronze.video_quarantine where source_file = %s", (arrived_uri(found),)
    ).fetchone()[0]
    metadata = {
        "file": arrived_uri(found),
        "records_in_file": lines,
        "rows_loaded": loaded,
        "rows_quarantined": quarantined,
    }
    if loaded + quarantined != lines:
        metadata["problem"] = f"{lines} records, {loaded} loaded + {quarantined} quarantined"
    return loaded + quarantined == lines, metadata


def not_empty(conn, table: BronzeTable, scope: LoadScope | None) -> dg.AssetCheckResult:
    """Every day of the scope has rows."""
    if scope is None:
        return dg.AssetCheckResult(passed=False, metadata={"problem": "nothing has been loaded"})
    per_day = dict(
        conn.execute(
            sql.SQL("select arrival_date::text, count(*) from {} where ").format(table.ident)
            + scope.where
            + sql.SQL(" group by 1"),
            scope.params,
        ).fetchall()
    )
    empty = [day for day in scope.partition_keys if not per_day.get(day)]
    return dg.AssetCheckResult(
        passed=not empty,
        metadata={"rows": sum(per_day.values()), "scope": scope.label, "empty_days": ", ".join(empty) or "none"},
    )


def build_checks(
    asset: str, table_of, file_name: str, csv: bool, keys: tuple[str, ...]
) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey(["bronze", asset])

    def table(conn) -> BronzeTable:
        migrations.migrate(conn)
        return table_of(conn)

    @dg.asset_check(
        asset=key,
        name=f"{asset}_file_readable",
        blocking=True,
        description=f"The day's {file_name} is in the landing zone, readable, and every record in it "
        "was loaded or quarantined.",
    )
    def readable(
        context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse, video_landing: LandingZone
    ) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            t = table(conn)
            return file_readable(
                video_landing, conn, t, _scope(context, conn, t) if _table_exists(conn, t) else None, file_name, csv
            )

    @dg.asset_check(asset=key, name=f"{asset}_not_empty", blocking=True, description="The day loaded at least one row.")
    def non_empty(context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            t = table(conn)
            return not_empty(conn, t, _scope(context, conn, t) if _table_exists(conn, t) else None)

    @dg.asset_check(
        asset=key,
        name=f"{asset}_expected_columns",
        blocking=True,
        description="The table has exactly the expected columns (for content: the recorded schema).",
    )
    def expected_columns(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            return bronze_checks.expected_columns(conn, table(conn))

    @dg.asset_check(
        asset=key,
        name=f"{asset}_no_all_null_rows",
        blocking=True,
        description="No row is empty in every source column.",
    )
    def no_all_null(context: dg.AssetCheckExecutionContext, warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            t = table(conn)
            if not _table_exists(conn, t):
                return dg.AssetCheckResult(passed=True, metadata={"scope": "nothing loaded yet"})
            # Keys are required (a row without them is quarantined): judge a row by its other values.
            ignore = ("arrival_date", "source_line", *keys)
            if not [c for c in t.source_column_names if c not in ignore]:
                return dg.AssetCheckResult(passed=True, metadata={"scope": "no value columns yet"})
            return bronze_checks.no_all_null_rows(conn, t, _scope(context, conn, t), ignore=ignore)

    @dg.asset_check(
        asset=key,
        name=f"{asset}_no_identical_files",
        blocking=False,
        description=f"No {file_name} was refused in the last 24 hours for holding the same bytes as one loaded "
        "for another day (set DW_VIDEO_ACCEPT_IDENTICAL_FILES=true where that is legitimate; the refused file "
        "is in failed/ with its report).",
    )
    def no_identical(warehouse: PostgresWarehouse) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            return bronze_checks.no_identical_files(conn, table(conn))

    @dg.asset_check(
        asset=key,
        name=f"{asset}_files_not_waiting",
        blocking=False,
        description=f"No {file_name} has waited in the landing zone longer than DW_VIDEO_MAX_WAIT_MINUTES (default "
        "180) without being loaded since it arrived (the sensor stopped, runs failing, or a day whose other "
        "files never came: a day loads once all three have landed).",
    )
    def files_not_waiting(warehouse: PostgresWarehouse, video_landing: LandingZone) -> dg.AssetCheckResult:
        max_wait = timedelta(minutes=float(os.environ.get("DW_VIDEO_MAX_WAIT_MINUTES", "180")))
        zone = video_landing.landing()
        files = [
            f for f in zone.list() if not f.path.startswith(FAILED) and plain_name(f.path).endswith("/" + file_name)
        ]
        with warehouse.connect() as conn:
            ledger = _ledger_exists(conn)

            def loaded(file: LandedFile) -> bool:
                return (
                    ledger
                    and conn.execute(
                        "select exists (select from bronze.batch_ledger where source = %s and status = 'succeeded'"
                        " and finished_at >= %s)",
                        (file.uri, file.modified),
                    ).fetchone()[0]
                )

            return bronze_checks.files_not_waiting(files, max_wait, loaded)

    return [readable, non_empty, expected_columns, no_all_null, no_identical, files_not_waiting]


def _required(schema) -> tuple[str, ...]:
    return tuple(c.name for c in schema.columns if c.required)


(
    video_users_file_readable,
    video_users_not_empty,
    video_users_expected_columns,
    video_users_no_all_null_rows,
    video_users_no_identical_files,
    video_users_files_not_waiting,
) = build_checks("video_users", lambda _conn: USERS, USERS_FILE, True, _required(USERS_SCHEMA))
(
    video_viewing_sessions_file_readable,
    video_viewing_sessions_not_empty,
    video_viewing_sessions_expected_columns,
    video_viewing_sessions_no_all_null_rows,
    video_viewing_sessions_no_identical_files,
    video_viewing_sessions_files_not_waiting,
) = build_checks("video_viewing_sessions", lambda _conn: SESSIONS, SESSIONS_FILE, True, _required(SESSIONS_SCHEMA))
(
    content_file_readable,
    content_not_empty,
    content_expected_columns,
    content_no_all_null_rows,
    content_no_identical_files,
    content_files_not_waiting,
) = build_checks("content", content_table, CONTENT_FILE, False, ("content_id",))

# Checks on the landing zone rather than a day's load: run by the watch job's schedule, not in ingest runs.
WATCH_CHECKS = [
    video_users_no_identical_files,
    video_users_files_not_waiting,
    video_viewing_sessions_no_identical_files,
    video_viewing_sessions_files_not_waiting,
    content_no_identical_files,
    content_files_not_waiting,
]
