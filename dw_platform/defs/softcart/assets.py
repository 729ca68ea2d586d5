"""Bronze for the SoftCart domain: the shop's MariaDB/MySQL tables over ODBC, and its web servers'
access logs from a landing zone.

`sales_data` is append-only at the source (an auto-increment rowid per sale): each load reads the
rows above the highest rowid bronze holds, in rowid order, inside the load's transaction and under
its lock, so two runs at once take turns and the second reads only what the first did not add.
`products` and `customers` are small reference tables, read whole on every run.
"""

import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone

import dagster as dg
import psycopg
from psycopg import sql

from dw_platform.defs.softcart.partitions import (
    ARCHIVE,
    FAILED,
    INCOMING,
    archive_path,
    failed_path,
    report_path,
    weblog_files,
)
from dw_platform.domains import asset_attributes
from dw_platform.lib import bronze
from dw_platform.lib.access_log import MAX_LINE_BYTES
from dw_platform.lib.bronze import BronzeTable, LoadScope, Watermark
from dw_platform.lib.compression import CompressionError, decompressed
from dw_platform.lib.identical_files import ContentDigest, IdenticalFile, refuse_identical
from dw_platform.lib.landing import LandedFile, Landing, LandingZone, archive, failure_report, move, put_report
from dw_platform.lib.odbc import OdbcSource, quote_ident, quote_table
from dw_platform.lib.partition_rows import partition_and_table_rows
from dw_platform.lib.prefetch import prefetch
from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.softcart.ingest import (
    CUSTOMERS,
    PRODUCTS,
    SALES_DATA,
    WEB_ACCESS_LOG,
    AccessLogFile,
)

SALES_SOURCE_TABLE = "sales_data"
ROWID = "rowid"
WHOLE_TABLE = "all"  # the one "partition" of an unpartitioned table: its advisory-lock key


def table_scope() -> LoadScope:
    return LoadScope((WHOLE_TABLE,), sql.SQL("true"))


def select_columns(table: BronzeTable, source_table: str, dialect) -> str:
    cols = ", ".join(quote_ident(c, dialect) for c in table.source_column_names)
    return f"SELECT {cols} FROM {quote_table(source_table, dialect)}"


def get_last_rowid(conn: psycopg.Connection) -> int:
    """The highest rowid bronze holds (0 when empty)."""
    return conn.execute(
        sql.SQL("select coalesce(max({}), 0) from {}").format(sql.Identifier(ROWID), SALES_DATA.ident)
    ).fetchone()[0]


# The MariaDB ODBC driver (Connector/ODBC 3.1) holds a whole result in memory, so sales_data is
# read in keyset pages of rows: memory stays one page deep however large the backlog is.
PAGE_ROWS = 200_000


def latest_records_query(dialect, page_rows: int | None = None) -> str:
    """The rows of a rowid range (lower bound exclusive, upper inclusive), in rowid order; with
    `page_rows`, the first `page_rows` of them."""
    rowid = quote_ident(ROWID, dialect)
    query = (
        f"{select_columns(SALES_DATA, SALES_SOURCE_TABLE, dialect)} WHERE {rowid} > ? AND {rowid} <= ? ORDER BY {rowid}"
    )
    if page_rows is None:
        return query
    return f"{query} LIMIT {page_rows}" if dialect == "mysql" else f"{query} FETCH FIRST {page_rows} ROWS ONLY"


def copy_columns(table: BronzeTable) -> list[tuple[str, str]]:
    return [(c.name, c.pg_type) for c in table.columns]


def get_latest_records(source: OdbcSource, last_rowid: int) -> Iterator:
    """The source rows with a rowid above `last_rowid` up to the highest rowid when the read
    starts (read first by the same reader), in rowid order, as Arrow record batches fetched
    column-wise by the ODBC reader process, in keyset pages of `PAGE_ROWS` rows (gaps in the
    rowids cost nothing). Rows committed later wait for the next run."""
    rowid, table = quote_ident(ROWID, source.dialect), quote_table(SALES_SOURCE_TABLE, source.dialect)
    return source.arrow_stream(
        latest_records_query(source.dialect, PAGE_ROWS),
        [last_rowid],
        page_rows=PAGE_ROWS,
        bound_query=f"SELECT MAX({rowid}) FROM {table}",
    )


@dg.asset(
    key=["bronze", "softcart_sales_data"],
    **asset_attributes("softcart"),
    kinds={"mysql", "odbc", "postgres"},
    description="SoftCart's sales_data over ODBC, append-only: each run adds the rows whose rowid is above "
    "the highest rowid in bronze, in rowid order; bronze rows are never changed.",
)
def softcart_sales_data(
    context: dg.AssetExecutionContext, warehouse: PostgresWarehouse, softcart_source: OdbcSource
) -> dg.MaterializeResult:
    last = {}

    def rows(conn: psycopg.Connection):
        # Under the load's lock, before streaming: what this load must add starts here.
        last["rowid"] = get_last_rowid(conn)
        context.log.info(f"bronze holds rowids up to {last['rowid']:,}; reading {SALES_SOURCE_TABLE} rows above it")
        return get_latest_records(softcart_source, last["rowid"])

    with warehouse.connect() as conn:
        result = bronze.load(
            conn,
            SALES_DATA,
            rows,
            asset_key=context.asset_key.to_user_string(),
            scope=table_scope(),
            source=f"{softcart_source.name}:{SALES_SOURCE_TABLE}",
            watermark=Watermark(f"{softcart_source.name}.{SALES_SOURCE_TABLE}", ROWID),
            run_id=context.run.run_id,
            log=context.log.info,
        )
        first_id, last_id = conn.execute(
            "select first_id, last_id from bronze.batch_ledger where batch_id = %s", (result.batch_id,)
        ).fetchone()
    context.log.info(
        result.summary
        if result.rows_read
        else f"no new {SALES_SOURCE_TABLE} rows above rowid {last['rowid']:,}: loaded 0 rows"
    )
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            "rowid_before": last["rowid"],
            "first_rowid": first_id,
            "last_rowid": last_id,
        }
    )


def _snapshot(
    context: dg.AssetExecutionContext,
    warehouse: PostgresWarehouse,
    source: OdbcSource,
    table: BronzeTable,
    source_table: str,
) -> dg.MaterializeResult:
    with warehouse.connect() as conn:
        result = bronze.load(
            conn,
            table,
            source.copy_stream(select_columns(table, source_table, source.dialect), [], copy_columns(table)),
            asset_key=context.asset_key.to_user_string(),
            scope=table_scope(),
            source=f"{source.name}:{source_table}",
            run_id=context.run.run_id,
            log=context.log.info,
        )
    context.log.info(result.summary)
    return dg.MaterializeResult(metadata=result.metadata())


@dg.asset(
    key=["bronze", "softcart_products"],
    **asset_attributes("softcart"),
    kinds={"mysql", "odbc", "postgres"},
    description="SoftCart's products, read whole on every run; changed rows are appended as new versions.",
)
def softcart_products(
    context: dg.AssetExecutionContext, warehouse: PostgresWarehouse, softcart_source: OdbcSource
) -> dg.MaterializeResult:
    return _snapshot(context, warehouse, softcart_source, PRODUCTS, "products")


@dg.asset(
    key=["bronze", "softcart_customers"],
    **asset_attributes("softcart"),
    kinds={"mysql", "odbc", "postgres"},
    description="SoftCart's customers (id, country), read whole on every run; changed rows are appended as new versions.",
)
def softcart_customers(
    context: dg.AssetExecutionContext, warehouse: PostgresWarehouse, softcart_source: OdbcSource
) -> dg.MaterializeResult:
    return _snapshot(context, warehouse, softcart_source, CUSTOMERS, "customers")


# --- web access logs ---------------------------------------------------------------------------

ACCEPT_IDENTICAL = "DW_SOFTCART_WEBLOGS_ACCEPT_IDENTICAL_FILES"  # true: identical files under two names both load


def source_file(zone: Landing, partition_key: str) -> str:
    """`_bronze_source_file` of a log's rows: where it arrived (stable after it is archived)."""
    return LandedFile(INCOMING + partition_key, "", 0, zone.location()).uri


def file_scope(source: str, partition_key: str) -> LoadScope:
    return LoadScope(
        (partition_key,), sql.SQL("{} = %(file)s").format(sql.Identifier("_bronze_source_file")), {"file": source}
    )


def locate_log(zone: Landing, partition_key: str) -> LandedFile | None:
    """The file of a partition: waiting in incoming/, else (a re-run) in failed/ or the archive."""
    for path in (INCOMING + partition_key, failed_path(partition_key), archive_path(partition_key)):
        found = zone.find(path)
        if found is not None:
            return found
    return None


def log_chunks(zone: Landing, file: LandedFile) -> Iterator[bytes]:
    """The file's lines as bytes: decompressed when it is compressed. A file as it arrived must be
    what its name says; an archived one is what the archive wrote (`landing.archive`)."""
    return decompressed(zone.chunks(file), "" if file.path.startswith(ARCHIVE) else file.path)


def bad_file(failure: dg.Failure) -> bool:
    """The load failed because of the file itself (not the compression its name claims, or the
    same bytes as a file loaded before): it goes to failed/. Other failures (storage, warehouse)
    leave it in incoming/ for a retry or the sensor's next request."""
    return isinstance(failure.__cause__, (CompressionError, IdenticalFile))


def max_line_bytes() -> int:
    return int(os.environ.get("DW_SOFTCART_MAX_LINE_BYTES", MAX_LINE_BYTES))


def load_log(
    conn: psycopg.Connection,
    chunks: Iterable[bytes],
    key: str,
    source: str,
    *,
    run_id: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    max_line: int = MAX_LINE_BYTES,
) -> tuple[bronze.LoadResult, AccessLogFile, ContentDigest]:
    """One access-log file (`chunks`: its lines' bytes; `source`: where it arrived) into bronze as
    partition `key`: its lines, its quarantine and its ledger entry with the content's hash, in one
    transaction, refused (`IdenticalFile`) when another file with the same content is loaded."""
    parsed = AccessLogFile(source, max_line)
    content = ContentDigest()

    def after_copy(conn, batch_id, load_ts):
        parsed.write_quarantine(conn, batch_id, load_ts)
        refuse_identical(
            conn,
            content,
            table=WEB_ACCESS_LOG.qualified_name,
            partition_key=key,
            source=source,
            records=parsed.lines,
            setting=ACCEPT_IDENTICAL,
        )

    result = bronze.load(
        conn,
        WEB_ACCESS_LOG,
        parsed.batches(prefetch(content.through(chunks))),  # download and decompression overlap parsing
        asset_key="bronze/web_access_log",
        scope=file_scope(source, key),
        source=source,
        run_id=run_id,
        log=log,
        after_copy=after_copy,
        content_sha256=content.hexdigest,
    )
    return result, parsed, content


@dg.asset(
    key=["bronze", "web_access_log"],
    **asset_attributes("softcart"),
    kinds={"azure", "postgres"},
    partitions_def=weblog_files,
    description="Web server access logs (Common/Combined Log Format; plain, .gz, .bz2 or .zst) from the weblogs "
    "landing zone's incoming/, one partition per file, one row per line; lines that do not parse are in "
    "bronze.web_access_log_quarantine with their exact bytes and the reason. After the commit the file is "
    "archived to archive/ (gzip-compressed unless it arrived compressed); a file that cannot be loaded (a "
    "compression it does not have, the same bytes as a file loaded before) goes to failed/ with a report.",
)
def web_access_log(
    context: dg.AssetExecutionContext, warehouse: PostgresWarehouse, softcart_weblogs: LandingZone
) -> dg.MaterializeResult:
    key = context.partition_key
    zone = softcart_weblogs.landing()
    found = locate_log(zone, key)
    if found is None:
        raise dg.Failure(
            f"access log {key!r} is in none of {INCOMING}, {FAILED}, {ARCHIVE} of the weblogs landing zone",
            allow_retries=False,
        )
    context.log.info(f"ingesting {found.uri} ({found.size:,} bytes)")
    source = source_file(zone, key)
    started = datetime.now(timezone.utc)
    try:
        with warehouse.connect() as conn:
            result, parsed, content = load_log(
                conn,
                log_chunks(zone, found),
                key,
                source,
                run_id=context.run.run_id,
                log=context.log.info,
                max_line=max_line_bytes(),
            )
            rows = partition_and_table_rows(conn, WEB_ACCESS_LOG.qualified_name, result.rows_loaded)
    except dg.Failure as failure:
        if bad_file(failure) and not found.path.startswith(ARCHIVE):
            _file_failed(context, zone, found, key, failure, started)
        raise
    archived = archive_path(key)
    if not found.path.startswith(ARCHIVE):  # committed: now (and only now) the file is archived
        try:
            archive(zone, found, archived)
            for stale in (failed_path(key), report_path(key)):  # what an earlier version that failed left
                if (old := zone.find(stale)) is not None:
                    zone.delete(old)
        except Exception as exc:
            # The lines are committed; a retry re-reads the file (replacing its rows) and archives it.
            raise dg.Failure(
                f"loaded {found.path} but could not archive it to {archived}: {exc}", allow_retries=True
            ) from exc
        context.log.info(f"archived {found.path} to {archived}")
    context.log.info(f"{result.summary}; quarantined {parsed.lines_quarantined:,} of {parsed.lines:,} lines")
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            **rows,
            "source_file": source,
            "lines": parsed.lines,
            "lines_quarantined": parsed.lines_quarantined,
            "archived_to": archived,
            "content_sha256": content.hexdigest() or "",
            "quarantine_reasons": ", ".join(f"{k}: {v}" for k, v in sorted(parsed.reasons.items())) or "none",
        }
    )


def _file_failed(context, zone: Landing, found: LandedFile, key: str, failure: dg.Failure, started: datetime) -> None:
    """File a file that cannot be loaded in failed/, as it arrived, with its report beside it."""
    try:
        if found.path != failed_path(key):
            move(zone, found, failed_path(key))
        put_report(zone, report_path(key), failure_report(found, failure.__cause__, started))
    except Exception as exc:
        raise dg.Failure(
            f"{failure.description}; and then could not move it to {FAILED} with its report: {exc}",
            allow_retries=True,
        ) from exc
    context.log.info(f"moved {found.path} to {failed_path(key)} with its report")
