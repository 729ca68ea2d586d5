"""Bronze for the replication domain, per source:

- `bronze/lakehouse/<source>`: the Iceberg tables; its dynamic partitions are the source's tables
  (`schema.table`), each `bronze.<source>.<schema>__<table>`. Materialized by the bulk load: a run
  of several partitions is ONE load at one consistent snapshot (single-run backfill policy) that
  reports each table's materialization as the table completes, so a failed table does not hide the
  others, then evaluates the checks and fails if any table failed (the job's retry policy runs it
  again; completed tables are skipped). Change data capture adds a materialization per applied
  batch.
- `bronze/cdc_events/<source>`: the durable change event log in the warehouse; materializing it
  captures the slot's pending changes into it and applies them to the Iceberg tables.
"""

import time
from collections.abc import Iterator

import dagster as dg

from dw_platform.defs.replication import checks
from dw_platform.defs.replication.partitions import cdc_events_key, lakehouse_key, table_partitions
from dw_platform.domains import asset_attributes
from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.lib.webhook import AlertWebhook
from dw_platform.replication import cdc, schema_changes
from dw_platform.replication.bulk import BulkLoad, is_transient, one_line
from dw_platform.replication.capture import CaptureResult
from dw_platform.replication.eventlog import CDC_EVENTS
from dw_platform.replication.extractors import extractor_for
from dw_platform.replication.iceberg import LINEAGE_COLUMNS
from dw_platform.replication.sources import SourceConfig, load_sources
from dw_platform.replication.status import ReplicationMeta


class BulkLoadConfig(dg.Config):
    full_reload: bool = False  # reload tables already completed (a re-seed)
    workers: int = 0  # tables read in parallel; 0 = the source's `workers` setting


class ChangeCaptureConfig(dg.Config):
    batch_changes: int = 0  # changes per capture batch / apply micro-batch; 0 = the source's cdc_batch_changes
    time_budget_s: float = 0  # stop capturing after this long (the sensor starts the next run); 0 = the source's


def column_schema(result) -> dg.TableSchema:

    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.kind if c.kind != "decimal" else f"decimal({c.precision},{c.scale})",
                description=f"source: {c.source_type}" if c.source_type != "lineage" else "lineage",
                constraints=dg.TableColumnConstraints(
                    nullable=c.nullable, unique=list(result.table.primary_key) == [c.name]
                ),
            )
            for c in (*result.table.columns, *LINEAGE_COLUMNS)
        ]
    )


def materialization(key: dg.AssetKey, result) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key=key,
        partition=result.key,
        metadata={
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
                f"{c['change_type']} {c['column_name'] or ''}".strip() for c in result.schema_changes
            )
            or "none",
            "batch_id": result.batch_id,
        },
    )


def _reported(results: Iterator) -> Iterator:
    """`results`, with a failure of the run itself (the source unreachable, no logical decoding,
    no publication, another run in progress) turned into one Failure, retried only when transient."""

    try:
        yield from results
    except Exception as exc:
        raise dg.Failure(description=one_line(exc), allow_retries=is_transient(exc)) from exc


def build_lakehouse_asset(source: SourceConfig) -> dg.AssetsDefinition:
    key = lakehouse_key(source.name)

    # A multi-asset only to be subsettable: an operator can run any of its checks alone from the
    # UI (a run of the checks without the load), over every table of the source.
    @dg.multi_asset(
        name=key.to_python_identifier(),  # the op name run config addresses, as before
        specs=[
            dg.AssetSpec(
                key,
                **asset_attributes("replication"),
                kinds={"iceberg", source.engine},
                partitions_def=table_partitions(source.name),
                deps=[cdc_events_key(source.name)],
                skippable=True,
                description=(
                    f"Every selected table of the {source.engine} source `{source.name}` as an Iceberg table in "
                    f"namespace bronze.{source.name}, copied at one consistent snapshot (partition = schema.table)."
                ),
            )
        ],
        partitions_def=table_partitions(source.name),
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=checks.check_specs(key),
        can_subset=True,
    )
    def lakehouse_tables(
        context: dg.AssetExecutionContext, config: BulkLoadConfig, lakehouse: Lakehouse, alert_webhook: AlertWebhook
    ) -> Iterator:

        if key not in context.selected_asset_keys:  # the checks alone, or after a change data capture run
            meta = ReplicationMeta(lakehouse, source.name)
            keys = _applied_in_run(context, key) or list(meta.statuses())
            yield from checks.evaluate(lakehouse, meta, keys, context.selected_asset_check_keys)
            return
        keys = list(context.partition_keys)
        load = BulkLoad(
            source,
            extractor_for(source),
            lakehouse,
            run_id=context.run.run_id,
            log=context.log.info,
            warn=context.log.warning,
        )
        failed = []
        for result in _reported(load.run(keys, full_reload=config.full_reload, workers=config.workers or None)):
            if result.status == "completed":
                context.log.info(
                    f"{result.key}: {result.rows:,} rows in {result.files} file(s) at {result.start_lsn}, "
                    f"{result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s)"
                )
                yield materialization(key, result)
            elif result.status == "failed":
                failed.append(result)
        schema_changes.notify_pending(load.meta, alert_webhook, context.log.info, context.log.warning)
        load.meta.expire_old_snapshots()
        yield from checks.evaluate(lakehouse, load.meta, keys, context.selected_asset_check_keys)
        if failed:
            raise dg.Failure(
                description=f"{len(failed)} of {len(keys)} table(s) failed: "
                + "; ".join(f"{r.key}: {r.error}" for r in failed),
                allow_retries=any(r.transient for r in failed),
            )

    return lakehouse_tables


def _applied_in_run(context: dg.AssetExecutionContext, key: dg.AssetKey) -> list[str]:
    """The tables (partitions of `key`) this run materialized before: those a change data capture
    run applied changes to."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    materialized = (r.event_log_entry.asset_materialization for r in records)
    return sorted({m.partition for m in materialized if m and m.asset_key == key and m.partition})


def applied_materialization(source: SourceConfig, batch) -> dg.AssetMaterialization:
    """The lakehouse table's materialization for one applied micro-batch."""

    metadata = {
        "events_applied": batch.events,
        "inserts": batch.ops["c"],
        "updates": batch.ops["u"],
        "deletes": batch.ops["d"],
        "truncates": batch.ops["t"],
        "dropped_before_start": batch.dropped,
        "applied_offset": batch.applied_offset,
        "applied_lsn": batch.applied_lsn,
        "lag_bytes": batch.lag_bytes,
        "duration_s": round(batch.seconds, 3),
    }
    if batch.snapshot_id is not None:
        metadata.update({"snapshot_id": str(batch.snapshot_id), "dagster/row_count": batch.rows})
    if batch.newest_commit_ms is not None:
        metadata["lag_s"] = round(time.time() - batch.newest_commit_ms / 1000, 3)
        metadata["oldest_change_lag_s"] = round(time.time() - batch.oldest_commit_ms / 1000, 3)
    if batch.schema_changes:
        metadata["schema_changes"] = ", ".join(
            f"{c['change_type']} {c['column_name'] or ''}".strip() for c in batch.schema_changes
        )
    if batch.created:
        metadata["created_from_change_stream"] = True
    if batch.backfill:
        metadata.update({"backfill": batch.backfill, "start_lsn": batch.start_lsn})
    return dg.AssetMaterialization(asset_key=lakehouse_key(source.name), partition=batch.key, metadata=metadata)


def build_cdc_asset(source: SourceConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=cdc_events_key(source.name),
        **asset_attributes("replication"),
        kinds={"postgres", source.engine},
        metadata={"dagster/column_schema": CDC_EVENTS.table_schema(), "dagster/table_name": "bronze.cdc_events"},
        description=(
            f"The Debezium-shaped change event log of `{source.name}` in bronze.cdc_events (one topic per "
            f"table, {source.name}.<schema>.<table>). A run captures the slot's pending changes into it, "
            "then applies them to the Iceberg tables of bronze/lakehouse/" + source.name + "."
        ),
    )
    def cdc_events(
        context: dg.AssetExecutionContext,
        config: ChangeCaptureConfig,
        lakehouse: Lakehouse,
        alert_webhook: AlertWebhook,
    ) -> Iterator:

        partitions = table_partitions(source.name).name

        def add_partition(key: str) -> None:
            if not context.instance.has_dynamic_partition(partitions, key):
                context.instance.add_dynamic_partitions(partitions, [key])

        for item in _reported(
            cdc.run(
                source,
                lakehouse,
                alert_webhook,
                run_id=context.run.run_id,
                log=context.log.info,
                warn=context.log.warning,
                add_partition=add_partition,
                batch_changes=config.batch_changes or source.cdc_batch_changes,
                time_budget_s=config.time_budget_s or source.cdc_time_budget_s,
            )
        ):
            if isinstance(item, CaptureResult):
                total = item
            else:
                yield applied_materialization(source, item)
        rate = total.events / total.seconds if total.seconds else 0
        context.log.info(
            f"captured {total.events:,} change(s) in {total.transactions:,} transaction(s); slot at "
            f"{total.confirmed_lsn}, {total.lag_bytes:,} bytes behind; {rate:,.0f} changes/s"
        )
        yield dg.MaterializeResult(
            metadata={
                "events_captured": total.events,
                "transactions": total.transactions,
                "duplicates_skipped": total.duplicates,
                "by_op": dict(total.per_op),
                "by_topic": dict(total.per_topic),
                "confirmed_lsn": total.confirmed_lsn,
                "lag_bytes": total.lag_bytes,
                "heartbeats": total.heartbeats,
                "duration_s": round(total.seconds, 3),
                "capture_s": round(total.capture_seconds, 3),
                "changes_per_s": round(rate),
            }
        )

    return cdc_events


@dg.definitions
def assets() -> dg.Definitions:
    sources = load_sources().values()
    return dg.Definitions(assets=[*(build_lakehouse_asset(s) for s in sources), *(build_cdc_asset(s) for s in sources)])
