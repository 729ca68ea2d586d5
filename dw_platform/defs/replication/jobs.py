"""The replication domain's jobs, per source from sources.yaml:

- `replication_discover`: list the selected tables of every source from its catalog, make their
  source side ready (replica identities), add a dynamic partition for each new table and record
  it `pending` in _cdc_status. Run it first, and again when tables are added to the source.
- `replication_bulk_load_<source>`: the bulk load of the selected partitions (all of them as one
  run: one consistent snapshot). Retries with exponential back-off; completed tables are skipped
  unless run config `full_reload: true`.
- `replication_cdc_<source>`: capture the slot's pending changes into the event log and apply
  them to the Iceberg tables, then the change-capture checks and the lakehouse's (for the tables
  it changed). Started by its sensor; runs of one
  source never overlap (a run-queue tag limit in dagster.yaml and a warehouse lock).
- `validate_lakehouse`: row counts of every lakehouse table, source tables missing from the
  lakehouse, failed tables; empty tables hidden with `hide_empty: true`.
"""

import dagster as dg

from dw_platform.defs.replication.partitions import cdc_events_key, lakehouse_key, table_partitions
from dw_platform.lib.executor import executor
from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.replication.bulk import cdc_mode
from dw_platform.replication.extractors import extractor_for
from dw_platform.replication.sources import SourceConfig, load_sources
from dw_platform.replication.status import ReplicationMeta, now
from dw_platform.replication.validate import validate_source


def build_discover_op(source: SourceConfig) -> dg.OpDefinition:
    @dg.op(
        name=f"discover_{source.name}",
        tags={"domain": "replication"},
        description=f"Discover the selected tables of {source.name}; add their partitions.",
    )
    def discover(context: dg.OpExecutionContext, lakehouse: Lakehouse) -> None:

        extractor = extractor_for(source)
        tables = [t for t in extractor.discover() if "." not in t.schema]
        extractor.prepare(tables, context.log.info)
        partitions = table_partitions(source.name)
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new = [t for t in tables if t.key not in known]
        if new:
            context.instance.add_dynamic_partitions(partitions.name, [t.key for t in new])
        meta = ReplicationMeta(lakehouse, source.name)
        statuses = meta.statuses()
        fresh = {
            t.key: {
                "status": "pending",
                "pending_at": now(),
                "primary_key": ",".join(t.primary_key),
                "cdc_mode": cdc_mode(source, t),
            }
            for t in tables
            if t.key not in statuses
        }
        if fresh:
            meta.update(fresh)
        gone = sorted(known - {t.key for t in tables})
        for key in gone:
            context.log.warning(
                f"{key} is no longer selected on the source (dropped or excluded); its lakehouse table is kept as it is"
            )
        context.log.info(f"{source.name}: {len(tables)} table(s) selected, {len(new)} new partition(s)")
        context.add_output_metadata(
            {
                "tables": len(tables),
                "new_partitions": ", ".join(t.key for t in new) or "none",
                "no_longer_on_source": ", ".join(gone) or "none",
                "without_primary_key": ", ".join(t.key for t in tables if not t.primary_key) or "none",
            }
        )

    return discover


class ValidateConfig(dg.Config):
    hide_empty: bool = False  # leave tables with no rows out of the report


def build_validate_op(sources: dict[str, SourceConfig]) -> dg.OpDefinition:
    @dg.op(
        name="validate_lakehouse_tables",
        tags={"domain": "replication"},
        out={},
        description="Row counts of every lakehouse table; source tables missing from the lakehouse; failed tables.",
    )
    def validate(context: dg.OpExecutionContext, config: ValidateConfig, lakehouse: Lakehouse):

        problems = []
        for source in sources.values():
            report = validate_source(source, lakehouse, hide_empty=config.hide_empty)
            for line in report.lines():
                context.log.info(line)
            yield dg.AssetObservation(asset_key=lakehouse_key(source.name), metadata=report.metadata())
            problems += report.problems()
        if problems:
            raise dg.Failure(description="lakehouse validation failed: " + "; ".join(problems), allow_retries=False)

    return validate


@dg.definitions
def jobs() -> dg.Definitions:
    sources = load_sources()
    discover_ops = [build_discover_op(s) for s in sources.values()]

    @dg.job(
        name="replication_discover",
        tags={"domain": "replication"},
        executor_def=executor(QUEUE),
        description="Discover every source's selected tables and add a partition per new table.",
    )
    def discover_job():
        for op in discover_ops:
            op()

    validate_op = build_validate_op(sources)

    @dg.job(
        name="validate_lakehouse",
        tags={"domain": "replication"},
        executor_def=executor(QUEUE),
        description="Row counts of every lakehouse table, tables missing from the lakehouse, failed tables.",
    )
    def validate_job():
        validate_op()

    bulk_jobs = [
        dg.define_asset_job(
            name=f"replication_bulk_load_{s.name}",
            selection=dg.AssetSelection.assets(lakehouse_key(s.name)),
            partitions_def=table_partitions(s.name),
            description=f"Bulk-load {s.name}'s selected tables into Iceberg at one consistent snapshot.",
            # Completed tables are skipped on a retry, failed ones loaded again.
            op_retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL),
            tags={"domain": "replication"},
            executor_def=executor(QUEUE),
        )
        for s in sources.values()
    ]
    cdc_jobs = [cdc_job(s) for s in sources.values()]
    return dg.Definitions(jobs=[discover_job, validate_job, *bulk_jobs, *cdc_jobs])


# Under DW_EXECUTOR=celery the replication jobs' steps go to a queue of their own, so the domain
# can have workers of its own (`dw workers N --queues replication`).
QUEUE = "replication"
CDC_TAG = "dw/replication_cdc"  # dagster.yaml limits runs to one per value (source)


def cdc_job(source: SourceConfig):
    return dg.define_asset_job(
        name=f"replication_cdc_{source.name}",
        # Then the lakehouse checks, for the tables the run changed (defs/replication/checks.py).
        selection=dg.AssetSelection.assets(cdc_events_key(source.name))
        | dg.AssetSelection.checks_for_assets(lakehouse_key(source.name)),
        description=(
            f"Capture {source.name}'s pending changes into the event log and apply them to the lakehouse; "
            "then the lakehouse checks."
        ),
        # Exactly once in effect whatever runs again: the log dedupes on LSN, the apply on offsets.
        op_retry_policy=dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL),
        tags={"domain": "replication", CDC_TAG: source.name},
        executor_def=executor(QUEUE),
    )
