"""Bronze for the video domain: each day's users, viewing sessions and content metadata files
from the landing zone (local folder or blob container), one partition per arrival day."""

from collections.abc import Callable, Iterable
from datetime import date, datetime, timezone

import dagster as dg
from psycopg import sql
from psycopg.types.json import Jsonb

from dw_platform.defs.video.partitions import (
    CONTENT_FILE,
    FAILED,
    SESSIONS_FILE,
    USERS_FILE,
    landed_path,
    video_daily,
)
from dw_platform.domains import asset_attributes
from dw_platform.lib import bronze, migrations
from dw_platform.lib.bronze import BronzeTable, LoadScope, ensure_bronze_objects
from dw_platform.lib.compression import CompressionError
from dw_platform.lib.csv_stream import CsvFormatError, CsvSchema
from dw_platform.lib.documents import MongoDocuments
from dw_platform.lib.identical_files import ContentDigest, IdenticalFile, refuse_identical
from dw_platform.lib.json_flatten import DocumentError, TableShape
from dw_platform.lib.landing import LandedFile, Landing, LandingZone, failure_report, move, put_report
from dw_platform.lib.partition_rows import partition_and_table_rows
from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.video.ingest import (
    CHILD_BASE,
    CONTENT_BASE,
    CONTENT_RAW,
    PARENT,
    SESSIONS,
    SESSIONS_SCHEMA,
    USERS,
    USERS_SCHEMA,
    ContentFile,
    CsvFile,
    apply_schema_changes,
    arrived_uri,
    current_shape,
    day_chunks,
    day_file,
    existing_child_tables,
)

# true: any file may load for two days with the same bytes. By default only content.json may: the
# catalog is sent whole every day and is unchanged on a day nothing was published.
ACCEPT_IDENTICAL = "DW_VIDEO_ACCEPT_IDENTICAL_FILES"
ACCEPT_IDENTICAL_DEFAULT = CONTENT_FILE


def day_scope(day: str) -> LoadScope:
    window = video_daily.time_window_for_partition_key(day)
    return LoadScope.time_window([day], "arrival_date", window.start, window.end)


def each_day(context: dg.AssetExecutionContext, load_day) -> dict[dg.AssetKey, dict]:
    """Load each arrival day of the run on its own (one day, or a range: a single-run backfill or
    a catch-up run), `load_day(day)` -> {asset key: metadata}. In a range, each day's metadata goes
    to its partition, the result holds the totals, and the days that failed (files missing or bad)
    fail the run once the others are loaded, each named with its reason."""
    days = context.partition_keys
    if len(days) == 1:
        return load_day(days[0])
    loaded, failed = {}, []
    for day in days:
        try:
            loaded[day] = load_day(day)
        except dg.Failure as failure:
            context.log.error(f"{day}: {failure.description}")
            failed.append((day, failure))
    if failed:
        raise dg.Failure(
            f"{len(failed)} of {len(days)} days failed (the others are loaded): "
            + "; ".join(f"{day}: {failure.description}" for day, failure in failed),
            allow_retries=any(failure.allow_retries for _, failure in failed),
        )
    totals: dict[dg.AssetKey, dict] = {}
    for day, results in loaded.items():  # in day order: the last day's table rows are the table's now
        for asset, metadata in results.items():
            table_rows = metadata.pop("dagster/row_count", 0)
            context.add_asset_metadata(metadata, asset_key=asset, partition_key=day)
            total = totals.setdefault(asset, {"days": 0, "rows_in_days": 0})
            total["days"] += 1
            total["rows_in_days"] += metadata.get("dagster/partition_row_count", 0)
            total["dagster/row_count"] = table_rows
    return totals


def find_landed(context: dg.AssetExecutionContext, landing: LandingZone, day: str, file_name: str):
    zone = landing.landing()
    try:
        found = day_file(zone, day, file_name)
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    if found is None:
        raise dg.Failure(
            f"{landed_path(day, file_name)} has not arrived in the landing zone "
            f"({landing.local_folder or landing.container})",
            allow_retries=False,
        )
    context.log.info(f"ingesting {found.uri} ({found.size:,} bytes, version {found.version})")
    return zone, found


BAD_FILE = (CsvFormatError, CompressionError, DocumentError, IdenticalFile)


def file_failed(context, zone: Landing, found: LandedFile, error: Exception, started: datetime) -> dg.Failure:
    """A file that cannot be loaded (one of BAD_FILE) goes to failed/, as it arrived, with its
    report beside it; returns the run's failure, which names it. Other failures (storage,
    warehouse) leave it where it is, for a retry or the sensor's next request."""
    destination = FAILED + found.path.removeprefix(FAILED)
    try:
        if found.path != destination:
            move(zone, found, destination)
        put_report(zone, destination + ".report.json", failure_report(found, error, started))
    except Exception as exc:
        return dg.Failure(f"{found.uri}: {error}; and then could not move it to {FAILED}: {exc}", allow_retries=True)
    context.log.info(f"moved {found.path} to {destination} with its report")
    return dg.Failure(f"{found.uri}: {error} (moved to {destination})", allow_retries=False)


def tidy_failed(context, zone: Landing, found: LandedFile) -> None:
    """After a load that committed: a file re-run from failed/ goes back to its day's folder; what
    an earlier version that failed left in failed/ (the file, its report) is removed."""
    day_path = found.path.removeprefix(FAILED)
    if found.path != day_path:
        move(zone, found, day_path)
        context.log.info(f"moved {found.path} back to {day_path}")
    for stale in (FAILED + day_path, FAILED + day_path + ".report.json"):
        if (old := zone.find(stale)) is not None:
            zone.delete(old)


def load_csv(
    conn,
    chunks: Iterable[bytes],
    table: BronzeTable,
    schema: CsvSchema,
    scope: LoadScope,
    source: str,
    *,
    run_id: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> tuple[bronze.LoadResult, CsvFile, ContentDigest]:
    """One day's CSV file (`chunks`: its content) into `table` for `scope` (the day): its rows, its
    quarantine and its ledger entry with the content's hash, in one transaction, refused
    (`IdenticalFile`) when the same content is loaded for another day."""
    parsed = CsvFile(source, date.fromisoformat(scope.partition_keys[0]), schema)
    content = ContentDigest()

    def after_copy(conn, batch_id, load_ts):
        parsed.write_quarantine(conn, batch_id, load_ts)
        refuse_identical(
            conn,
            content,
            table=table.qualified_name,
            partition_key=scope.label,
            source=source,
            records=parsed.data_lines,
            setting=ACCEPT_IDENTICAL,
            default=ACCEPT_IDENTICAL_DEFAULT,
        )

    result = bronze.load(
        conn,
        table,
        parsed.batches(content.through(chunks)),
        asset_key=f"bronze/{table.name}",
        scope=scope,
        source=source,
        run_id=run_id,
        log=log,
        after_copy=after_copy,
        content_sha256=content.hexdigest,
    )
    return result, parsed, content


def _load_csv(
    context, warehouse: PostgresWarehouse, landing: LandingZone, table: BronzeTable, schema: CsvSchema, file_name: str
) -> dg.MaterializeResult:
    (metadata,) = each_day(
        context,
        lambda day: {context.asset_key: _load_csv_day(context, day, warehouse, landing, table, schema, file_name)},
    ).values()
    return dg.MaterializeResult(metadata=metadata)


def _load_csv_day(
    context,
    day: str,
    warehouse: PostgresWarehouse,
    landing: LandingZone,
    table: BronzeTable,
    schema: CsvSchema,
    file_name: str,
) -> dict:
    zone, found = find_landed(context, landing, day, file_name)
    started = datetime.now(timezone.utc)
    with warehouse.connect() as conn:
        try:
            result, parsed, _ = load_csv(
                conn,
                day_chunks(zone, found),
                table,
                schema,
                day_scope(day),
                arrived_uri(found),
                run_id=context.run.run_id,
                log=context.log.info,
            )
        except dg.Failure as failure:
            if isinstance(failure.__cause__, BAD_FILE):
                raise file_failed(context, zone, found, failure.__cause__, started) from failure
            raise
        rows = partition_and_table_rows(conn, table.qualified_name, result.rows_loaded)
    tidy_failed(context, zone, found)
    context.log.info(f"{day}: loaded {result.rows_loaded:,} rows, quarantined {len(parsed.quarantine.rows):,}")
    return {
        **result.metadata(),
        **rows,
        "source_file": arrived_uri(found),
        "data_lines": parsed.data_lines,
        "rows_quarantined": len(parsed.quarantine.rows),
    }


@dg.asset(
    key=["bronze", "video_users"],
    **asset_attributes("video"),
    kinds={"azure", "csv", "postgres"},
    partitions_def=video_daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description=f"<day>/{USERS_FILE} from the video landing zone into bronze.video_users (values as they arrived).",
)
def video_users(
    context: dg.AssetExecutionContext, warehouse: PostgresWarehouse, video_landing: LandingZone
) -> dg.MaterializeResult:
    return _load_csv(context, warehouse, video_landing, USERS, USERS_SCHEMA, USERS_FILE)


@dg.asset(
    key=["bronze", "video_viewing_sessions"],
    **asset_attributes("video"),
    kinds={"azure", "csv", "postgres"},
    partitions_def=video_daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description=f"<day>/{SESSIONS_FILE} from the video landing zone into bronze.video_viewing_sessions.",
)
def video_viewing_sessions(
    context: dg.AssetExecutionContext, warehouse: PostgresWarehouse, video_landing: LandingZone
) -> dg.MaterializeResult:
    return _load_csv(context, warehouse, video_landing, SESSIONS, SESSIONS_SCHEMA, SESSIONS_FILE)


def load_content(
    conn,
    parsed: ContentFile,
    scope: LoadScope,
    source: str,
    asset_key: str,
    run_id: str | None,
    documents: MongoDocuments,
    log=lambda _m: None,
    content: ContentDigest | None = None,
) -> bronze.LoadResult:
    """bronze.content, its child tables, the quarantine and (without MongoDB) the raw JSONB rows,
    replaced for the partition in one transaction; refused (`IdenticalFile`) when `content` (the
    file's digest) is that of a file already loaded for another day."""
    apply_schema_changes(conn, parsed)
    if not documents.configured:
        ensure_bronze_objects(conn, CONTENT_RAW)
    lineage_where = scope.where

    def after_copy(conn, batch_id, load_ts):
        for name in parsed.children:
            table = parsed.child_table(name)
            conn.execute(sql.SQL("delete from {} where ").format(table.ident) + lineage_where, scope.params)
            rows = parsed.child_rows.get(name, [])
            shape = parsed.children[name]
            bronze.copy_side_rows(
                conn,
                table,
                [(r["content_id"], r["position"], parsed.arrival_date, *shape.as_tuple(r)) for r in rows],
                batch_id,
                load_ts,
                source,
            )
        if not documents.configured:
            conn.execute(sql.SQL("delete from {} where ").format(CONTENT_RAW.ident) + lineage_where, scope.params)
            bronze.copy_side_rows(
                conn,
                CONTENT_RAW,
                [(key, parsed.arrival_date, line, Jsonb(doc)) for line, key, doc in parsed.raw],
                batch_id,
                load_ts,
                source,
            )
        parsed.quarantine.write(conn, batch_id, load_ts)
        if content is not None:
            refuse_identical(
                conn,
                content,
                table=f"bronze.{PARENT}",
                partition_key=scope.label,
                source=source,
                records=len(parsed.rows) + len(parsed.quarantine.rows),
                setting=ACCEPT_IDENTICAL,
                default=ACCEPT_IDENTICAL_DEFAULT,
            )

    return bronze.load(
        conn,
        parsed.parent_table(),
        parsed.parent_batches(),
        asset_key=asset_key,
        scope=scope,
        source=source,
        run_id=run_id,
        log=log,
        after_copy=after_copy,
        content_sha256=content.hexdigest if content is not None else None,
    )


def parse_content(conn, source: str, arrival_date: date, data: bytes) -> ContentFile:
    """Flatten a content file against the shapes the bronze tables have now."""
    parent = current_shape(conn, PARENT, CONTENT_BASE) or TableShape()
    children = {name: current_shape(conn, name, CHILD_BASE) for name in existing_child_tables(conn)}
    parsed = ContentFile(source, arrival_date, parent, children)
    parsed.parse(data)
    return parsed


# The content loader writes bronze.content and its array tables in one transaction: they are one
# multi-asset, so the dbt sources on bronze.content_genres/content_cast meet the asset that
# really produces them. A new array field becomes a new table (bronze.content_<field>) at once;
# list it here to see it as an asset of its own.
CONTENT_ARRAYS = {
    "genres": "one row per genre of a content item (content_id, position, value)",
    "cast": "one row per cast member of a content item (content_id, position, name, role)",
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ["bronze", "content"],
            **asset_attributes("video"),
            kinds={"azure", "json", "postgres", "mongodb"},
            partitions_def=video_daily,
            description=(
                f"<day>/{CONTENT_FILE} (content metadata documents) flattened into bronze.content and one child table "
                "per array (bronze.content_genres, bronze.content_cast, ...); new fields become new columns "
                "(bronze.video_schema_changes); malformed documents go to bronze.video_quarantine; raw documents "
                "to MongoDB when DW_VIDEO_MONGODB_URI is set, else to bronze.content_raw (JSONB)."
            ),
        ),
        *(
            dg.AssetSpec(
                ["bronze", f"content_{field}"],
                **asset_attributes("video"),
                kinds={"json", "postgres"},
                partitions_def=video_daily,
                description=f"bronze.content_{field}: {what}, written with bronze.content from the same file.",
            )
            for field, what in CONTENT_ARRAYS.items()
        ),
    ],
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def content(
    context: dg.AssetExecutionContext,
    warehouse: PostgresWarehouse,
    video_landing: LandingZone,
    video_documents: MongoDocuments,
):
    for asset, metadata in each_day(
        context, lambda day: _load_content_day(context, day, warehouse, video_landing, video_documents)
    ).items():
        yield dg.MaterializeResult(asset_key=asset, metadata=metadata)


def _load_content_day(
    context, day: str, warehouse: PostgresWarehouse, video_landing: LandingZone, video_documents: MongoDocuments
) -> dict[dg.AssetKey, dict]:
    zone, found = find_landed(context, video_landing, day, CONTENT_FILE)
    started = datetime.now(timezone.utc)
    arrival_date = date.fromisoformat(day)
    content = ContentDigest()
    with warehouse.connect() as conn:
        migrations.migrate(conn)
        try:
            data = b"".join(content.through(day_chunks(zone, found)))
            parsed = parse_content(conn, arrived_uri(found), arrival_date, data)
            result = load_content(
                conn,
                parsed,
                day_scope(day),
                arrived_uri(found),
                "bronze/content",
                context.run.run_id,
                video_documents,
                context.log.info,
                content,
            )
        except (CompressionError, DocumentError) as exc:
            raise file_failed(context, zone, found, exc, started) from exc
        except dg.Failure as failure:
            if isinstance(failure.__cause__, BAD_FILE):
                raise file_failed(context, zone, found, failure.__cause__, started) from failure
            raise
        rows = partition_and_table_rows(conn, "bronze.content", result.rows_loaded)
        array_rows = {
            field: partition_and_table_rows(
                conn, f"bronze.content_{field}", _rows_of_day(conn, f"content_{field}", arrival_date)
            )
            for field in CONTENT_ARRAYS
        }
    tidy_failed(context, zone, found)
    raw_target = "bronze.content_raw"
    if video_documents.configured:
        written = video_documents.replace_partition(
            {"arrival_date": day, "collection": "content"}, (doc for _, _, doc in parsed.raw)
        )
        raw_target = f"mongodb {video_documents.database}.{video_documents.collection}"
        context.log.info(f"kept {written:,} raw documents in {raw_target}")
    for table, column, pg_type in parsed.added:
        context.log.info(f"schema change: bronze.{table} gained column {column} {pg_type}")
    return {
        dg.AssetKey(["bronze", "content"]): {
            **result.metadata(),
            **rows,
            "source_file": arrived_uri(found),
            "documents_quarantined": len(parsed.quarantine.rows),
            "child_tables": ", ".join(f"bronze.{n}" for n in sorted(parsed.children)) or "none",
            "columns_added": ", ".join(f"{t}.{c}" for t, c, _ in parsed.added) or "none",
            "raw_documents": raw_target,
        },
        **{
            dg.AssetKey(["bronze", f"content_{field}"]): {
                **counts,
                "dagster/table_name": f"bronze.content_{field}",
                "source_file": arrived_uri(found),
                "batch_id": str(result.batch_id),
            }
            for field, counts in array_rows.items()
        },
    }


def _rows_of_day(conn, table: str, arrival_date: date) -> int:
    """Rows of a content array table for one arrival day (0 when no document had that array yet)."""
    if not conn.execute("select to_regclass(%s) is not null", (f"bronze.{table}",)).fetchone()[0]:
        return 0
    return conn.execute(
        sql.SQL("select count(*) from {} where arrival_date = %s").format(sql.Identifier("bronze", table)),
        (arrival_date,),
    ).fetchone()[0]
