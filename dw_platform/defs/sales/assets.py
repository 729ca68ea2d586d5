"""Bronze for the sales domain: one CSV blob per dynamic partition, into bronze.sales."""

from collections.abc import Callable, Iterable
from datetime import datetime, timezone

import dagster as dg
import psycopg
from psycopg import sql

from dw_platform.defs.sales.partitions import FAILED, INCOMING, PROCESSED, blob_path, sales_blobs
from dw_platform.domains import asset_attributes
from dw_platform.lib import bronze
from dw_platform.lib.blob import BlobStorage, BlobVersion
from dw_platform.lib.bronze import LoadScope
from dw_platform.lib.compression import CompressionError, decompressed
from dw_platform.lib.crypto import Cipher, FernetKeys
from dw_platform.lib.identical_files import ContentDigest, IdenticalFile, refuse_identical
from dw_platform.lib.partition_rows import partition_and_table_rows
from dw_platform.lib.prefetch import prefetch
from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.sales.ingest import SALES, CsvFormatError, SalesFile

ACCEPT_IDENTICAL = "DW_SALES_ACCEPT_IDENTICAL_FILES"  # true: the same bytes may load under two blob names


def source_name(partition_key: str) -> str:
    """`_bronze_source_file` of a blob's rows: its name as it arrived."""
    return INCOMING + blob_path(partition_key)


def blob_scope(partition_key: str) -> LoadScope:
    return LoadScope(
        (partition_key,),
        sql.SQL("{} = %(blob)s").format(sql.Identifier("_bronze_source_file")),
        {"blob": source_name(partition_key)},
    )


def locate(storage: BlobStorage, partition_key: str) -> BlobVersion | None:
    """The blob of a partition: waiting in incoming/, else (a re-run) in failed/ or processed/.
    A name in both is an older version that loaded and a newer one that failed: the newer is taken."""
    for folder in (INCOMING, FAILED, PROCESSED):
        found = storage.version(folder + blob_path(partition_key))
        if found is not None:
            return found
    return None


def report_name(folder: str, partition_key: str) -> str:
    return f"{folder}{blob_path(partition_key)}.report.json"


def bad_file(failure: dg.Failure) -> bool:
    """The load failed because of the file itself (not CSV, not UTF-8, the wrong header, not the
    compression its name claims, the same bytes as a blob loaded before): only such a file goes to
    failed/. Storage, network, warehouse and configuration failures leave it where it is, for a
    retry or the sensor's next request."""
    return isinstance(failure.__cause__, (CsvFormatError, CompressionError, IdenticalFile))


def load_blob(
    conn: psycopg.Connection,
    chunks: Iterable[bytes],
    key: str,
    cipher: Cipher,
    *,
    run_id: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> tuple[bronze.LoadResult, SalesFile, ContentDigest]:
    """One blob (`chunks`: its content) into bronze.sales as partition `key`: its rows, its
    quarantine and its ledger entry with the content's hash, in one transaction, refused
    (`IdenticalFile`) when another blob with the same content is loaded."""
    parsed = SalesFile(source_name(key), cipher)
    content = ContentDigest()

    def after_copy(conn, batch_id, load_ts):
        parsed.write_quarantine(conn, batch_id, load_ts)
        refuse_identical(
            conn,
            content,
            table=SALES.qualified_name,
            partition_key=key,
            source=source_name(key),
            records=parsed.data_lines,
            setting=ACCEPT_IDENTICAL,
        )

    result = bronze.load(
        conn,
        SALES,
        parsed.batches(prefetch(content.through(chunks))),  # reading, decompressing, hashing overlap parsing
        asset_key="bronze/sales",
        scope=blob_scope(key),
        source=source_name(key),
        run_id=run_id,
        log=log,
        after_copy=after_copy,
        content_sha256=content.hexdigest,
    )
    return result, parsed, content


@dg.asset(
    key=["bronze", "sales"],
    **asset_attributes("sales"),
    kinds={"azure", "csv", "postgres"},
    partitions_def=sales_blobs,
    description=(
        "Sales CSV files (plain, .gz, .bz2 or .zst) from the blob container's incoming/ folder, one partition "
        "per blob; "
        "validated against dw_platform/sales/schema.yaml, sensitive columns Fernet-encrypted, "
        "bad rows in bronze.sales_quarantine with the reason."
    ),
)
def sales(
    context: dg.AssetExecutionContext, warehouse: PostgresWarehouse, sales_storage: BlobStorage, sales_keys: FernetKeys
) -> dg.MaterializeResult:
    key = context.partition_key
    blob = locate(sales_storage, key)
    if blob is None:
        raise dg.Failure(
            f"blob {key!r} is in none of {INCOMING}, {PROCESSED}, {FAILED} of container {sales_storage.container!r}",
            allow_retries=False,
        )
    context.log.info(f"ingesting {sales_storage.container}/{blob.name} (etag {blob.etag}, {blob.size:,} bytes)")
    started = datetime.now(timezone.utc)
    try:
        with warehouse.connect() as conn:
            result, parsed, content = load_blob(
                conn,
                decompressed(sales_storage.chunks(blob), blob.name),
                key,
                sales_keys.cipher(),
                run_id=context.run.run_id,
                log=context.log.info,
            )
            rows = partition_and_table_rows(conn, SALES.qualified_name, result.rows_loaded)
    except dg.Failure as failure:
        if not bad_file(failure):
            raise
        identical = isinstance(failure.__cause__, IdenticalFile)
        report = {
            "blob": blob.name,
            "etag": blob.etag,
            "status": "identical" if identical else "failed",
            "error": failure.description,
            "rows_loaded": 0,
            "rows_quarantined": 0,
            "started_at": started,
            "finished_at": datetime.now(timezone.utc),
        }
        if identical:
            first = failure.__cause__.first
            report["identical_to"] = {
                "blob": first.source,
                "batch_id": str(first.batch_id),
                "loaded_at": first.finished_at,
            }
        _finish(context, sales_storage, blob, key, FAILED, report, failure=failure)
        raise
    report = {
        "blob": blob.name,
        "etag": blob.etag,
        "status": "succeeded",
        "error": None,
        **parsed.summary(),
        "batch_id": str(result.batch_id),
        "content_sha256": content.hexdigest(),
        "started_at": started,
        "finished_at": datetime.now(timezone.utc),
    }
    if not parsed.header_found:
        report["note"] = "empty file: no header, no rows"
    _finish(context, sales_storage, blob, key, PROCESSED, report)
    context.log.info(f"{result.summary}; quarantined {parsed.rows_quarantined:,}")
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            **rows,
            "blob": blob.name,
            "etag": blob.etag,
            "rows_quarantined": parsed.rows_quarantined,
            "data_lines": parsed.data_lines,
        }
    )


def _finish(
    context,
    storage: BlobStorage,
    blob: BlobVersion,
    key: str,
    folder: str,
    report: dict,
    failure: dg.Failure | None = None,
) -> None:
    """After the data is committed (or the file failed for good): move the blob to `folder` (unless
    it is there already, as in a re-run) and write its report beside it. The report follows its
    blob: the one it leaves behind is deleted. A new upload that loads also removes the older
    version that failed under its name (superseded); an older processed version stays when a new
    one fails, as bronze still holds its rows."""
    path = blob_path(key)
    stale = [report_name(f, key) for f in (PROCESSED, FAILED) if f != folder and blob.name == f + path]
    if folder == PROCESSED and blob.name == INCOMING + path:
        stale += [FAILED + path, report_name(FAILED, key)]
    try:
        if blob.name != folder + path:
            moved = storage.move(blob, folder + path)
            context.log.info(f"moved {blob.name} to {moved.name}")
        storage.upload_json(report_name(folder, key), report)
        for name in stale:
            storage.delete(name)
    except Exception as exc:
        # Retried: a retry loads the blob again (replacing its rows) wherever it is now, and finishes it.
        done = f"{failure.description}; and then" if failure else f"loaded {blob.name} but"
        raise dg.Failure(f"{done} could not move it to {folder} with its report: {exc}", allow_retries=True) from exc
