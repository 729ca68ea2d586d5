"""Bronze for the replication domain: per source, one asset `bronze/lakehouse/<source>` whose
dynamic partitions are the source's tables (`schema.table`), each an Iceberg table
`bronze.<source>.<schema>__<table>`.

A run of several partitions is ONE bulk load at one consistent snapshot (single-run backfill
policy): it reports each table's materialization as the table completes, so a failed table does
not hide the others, then evaluates the checks and fails if any table failed (the job's retry
policy runs it again; completed tables are skipped).
"""


from collections.abc import Iterator

import dagster as dg

from dw_platform.defs.replication import checks
from dw_platform.defs.replication.partitions import table_partitions
from dw_platform.defs.replication.sources import SourceConfig, load_sources
from dw_platform.lib.domains import asset_attributes
from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.lib.webhook import AlertWebhook


class BulkLoadConfig(dg.Config):
    full_reload: bool = False  # reload tables already completed (a re-seed)
    workers: int = 0  # tables read in parallel; 0 = the source's `workers` setting


def lakehouse_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", "lakehouse", source])


def column_schema(result) -> dg.TableSchema:
    from dw_platform.defs.replication.iceberg import LINEAGE_COLUMNS

    return dg.TableSchema(columns=[
        dg.TableColumn(c.name, c.kind if c.kind != "decimal" else f"decimal({c.precision},{c.scale})",
                       description=f"source: {c.source_type}" if c.source_type != "lineage" else "lineage",
                       constraints=dg.TableColumnConstraints(nullable=c.nullable,
                                                             unique=list(result.table.primary_key) == [c.name]))
        for c in (*result.table.columns, *LINEAGE_COLUMNS)])


def materialization(key: dg.AssetKey, result) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(asset_key=key, partition=result.key, metadata={
        "dagster/row_count": result.rows,
        "dagster/table_name": result.iceberg_table,
        "dagster/column_schema": column_schema(result),
        "files": result.files,
        "snapshot_id": str(result.snapshot_id),
        "start_lsn": result.start_lsn,
        "snapshot_kind": result.snapshot_kind,
        "duration_s": round(result.seconds, 3),
        "rows_per_s": round(result.rows_per_second),
        "attempts": result.attempts,
        "schema_version": result.schema_version,
        "schema_changes": ", ".join(
            f"{c['change_type']} {c['column_name'] or ''}".strip() for c in result.schema_changes) or "none",
        "batch_id": result.batch_id,
    })


def build_lakehouse_asset(source: SourceConfig) -> dg.AssetsDefinition:
    key = lakehouse_key(source.name)

    @dg.asset(
        key=key,
        **asset_attributes("replication"),
        kinds={"iceberg", source.engine},
        partitions_def=table_partitions(source.name),
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
        check_specs=checks.check_specs(key),
        description=(f"Every selected table of the {source.engine} source `{source.name}` as an Iceberg table in "
                     f"namespace bronze.{source.name}, copied at one consistent snapshot (partition = schema.table)."),
    )
    def lakehouse_tables(context: dg.AssetExecutionContext, config: BulkLoadConfig, lakehouse: Lakehouse,
                         alert_webhook: AlertWebhook) -> Iterator:
        from dw_platform.defs.replication import schema_changes
        from dw_platform.defs.replication.bulk import BulkLoad
        from dw_platform.defs.replication.extractor import extractor_for

        keys = list(context.partition_keys)
        load = BulkLoad(source, extractor_for(source), lakehouse, run_id=context.run.run_id,
                        log=context.log.info, warn=context.log.warning)
        failed = []
        for result in load.run(keys, full_reload=config.full_reload, workers=config.workers or None):
            if result.status == "completed":
                context.log.info(f"{result.key}: {result.rows:,} rows in {result.files} file(s) at {result.start_lsn}, "
                                 f"{result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s)")
                yield materialization(key, result)
            elif result.status == "failed":
                failed.append(result)
        schema_changes.notify_pending(load.meta, alert_webhook, context.log.info, context.log.warning)
        load.meta.expire_old_snapshots()
        yield from checks.evaluate(lakehouse, load.meta, keys)
        if failed:
            raise dg.Failure(
                description=f"{len(failed)} of {len(keys)} table(s) failed: "
                            + "; ".join(f"{r.key}: {r.error}" for r in failed),
                allow_retries=any(r.transient for r in failed),
            )

    return lakehouse_tables


@dg.definitions
def assets() -> dg.Definitions:
    return dg.Definitions(assets=[build_lakehouse_asset(s) for s in load_sources().values()])
