"""Bronze for the sales domain: one CSV blob per dynamic partition, into bronze.sales."""

from datetime import datetime, timezone

import dagster as dg
from psycopg import sql

from dw_platform.defs.sales.ingest import SALES, CsvFormatError, SalesFile, ensure_quarantine
from dw_platform.defs.sales.partitions import FAILED, INCOMING, PROCESSED, blob_path, sales_blobs
from dw_platform.domains import asset_attributes
from dw_platform.lib import bronze
from dw_platform.lib.blob import BlobStorage, BlobVersion
from dw_platform.lib.bronze import LoadScope
from dw_platform.lib.crypto import FernetKeys
from dw_platform.lib.partition_rows import partition_and_table_rows
from dw_platform.lib.prefetch import prefetch
from dw_platform.lib.warehouse import PostgresWarehouse


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
    """The load failed because of the file itself (not CSV, not UTF-8, the wrong header): only such
    a file goes to failed/. Storage, network, warehouse and configuration failures leave it where
    it is, for a retry or the sensor's next request."""
    return isinstance(failure.__cause__, CsvFormatError)


@dg.asset(
    key=["bronze", "sales"],
    **asset_attributes("sales"),
    kinds={"azure", "csv", "postgres"},
    partitions_def=sales_blobs,
    description=(
        "Sales CSV files from the blob container's incoming/ folder, one partition per blob; "
        "validated against dw_platform/defs/sales/schema.yaml, sensitive columns Fernet-encrypted, "
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
    parsed = SalesFile(source_name(key), sales_keys.cipher())
    started = datetime.now(timezone.utc)
    try:
        with warehouse.connect() as conn:
            ensure_quarantine(conn)
            result = bronze.load(
                conn,
                SALES,
                parsed.batches(prefetch(sales_storage.chunks(blob))),  # download overlaps parsing
                asset_key=context.asset_key.to_user_string(),
                scope=blob_scope(key),
                source=source_name(key),
                run_id=context.run.run_id,
                log=context.log.info,
                after_copy=parsed.write_quarantine,
            )
            rows = partition_and_table_rows(conn, SALES.qualified_name, result.rows_loaded)
    except dg.Failure as failure:
        if not bad_file(failure):
            raise
        report = {
            "blob": blob.name,
            "etag": blob.etag,
            "status": "failed",
            "error": failure.description,
            "rows_loaded": 0,
            "rows_quarantined": 0,
            "started_at": started,
            "finished_at": datetime.now(timezone.utc),
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
