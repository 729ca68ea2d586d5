"""Silver and gold: the whole dbt project as one multi-asset, so a run builds what it selects
(seeds, silver, gold, their tests) in one `dbt build`.

Models tagged `customer_daily` or `video_daily` (the customer and video silver models,
incremental) are partitioned like the bronze they read and replace only what their window changed
(one day, or a range as one build); their gold follows what silver changed. The web traffic and
sales models are incremental by access-log file or blob (the run's partition reaches dbt as
DW_PARTITION_KEYS; docs/operations/history-and-backfills.md says which model rebuilds what).
One multi-asset rather than one per materialization: a run builds its seeds, silver, gold and
tests in ONE dbt invocation (each invocation costs seconds of start-up), and the translator gives
each model its own partitions. Run config `full_refresh`
rebuilds the incremental models from all of bronze.
dbt tests become asset checks; an error-severity failure stops dbt building what depends on it.
Every model follows its upstream (declarative automation, `dw_platform.lib.dbt.follows_upstream`).
"""

import dagster as dg
from dagster_dbt import DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets
from pydantic import Field

from dw_platform.defs.customer.partitions import customer_daily
from dw_platform.defs.video.partitions import video_daily
from dw_platform.domains import asset_attributes
from dw_platform.lib.dbt import DBT_PROJECT, DomainTranslator, prepare_if_dev, run_build
from dw_platform.lib.warehouse import PostgresWarehouse

prepare_if_dev()

TRANSLATOR = DomainTranslator(
    attributes=asset_attributes,
    partitions={"customer_daily": customer_daily, "video_daily": video_daily},
    # enable_code_references: each model links to its .sql file in the UI.
    settings=DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_code_references=True),
)


class DbtBuildConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="Rebuild the incremental models from all of bronze (dbt --full-refresh), whatever the run's "
        "partitions: after a model's logic changed. The tables come out as the partition-by-partition builds "
        "would have made them.",
    )


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path,
    project=DBT_PROJECT,
    dagster_dbt_translator=TRANSLATOR,
    backfill_policy=dg.BackfillPolicy.single_run(),
    name="dbt_models",
)
def dbt_models(
    context: dg.AssetExecutionContext, config: DbtBuildConfig, dbt: DbtCliResource, warehouse: PostgresWarehouse
):
    yield from run_build(context, dbt, warehouse, full_refresh=config.full_refresh)
