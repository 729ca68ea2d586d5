"""Silver and gold: the whole dbt project as one multi-asset, so a run builds what it selects
(seeds, silver, gold, their tests) in one `dbt build`.

Models tagged `customer_daily` (incremental) are partitioned like the bronze they read and
replace only their window; everything else (SCD2 dimension, bridges, facts, the sales and video
models) is unpartitioned and rebuilt whole. One run can hold both (the `customer_daily` job builds
a day of silver and the gold tables on it with one dbt invocation); a new incremental model joins
the daily partitioned set only when it carries the tag.
dbt tests become asset checks; an error-severity failure stops dbt building what depends on it.
Every model follows its upstream (declarative automation, `dw_platform.lib.dbt.follows_upstream`).
"""

import dagster as dg
from dagster_dbt import DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from dw_platform.defs.customer.partitions import customer_daily
from dw_platform.domains import asset_attributes
from dw_platform.lib.dbt import DBT_PROJECT, DomainTranslator, prepare_if_dev, run_build
from dw_platform.lib.warehouse import PostgresWarehouse

prepare_if_dev()

TRANSLATOR = DomainTranslator(
    attributes=asset_attributes,
    partitions={"customer_daily": customer_daily},
    # enable_code_references: each model links to its .sql file in the UI.
    settings=DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_code_references=True),
)


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path,
    project=DBT_PROJECT,
    dagster_dbt_translator=TRANSLATOR,
    backfill_policy=dg.BackfillPolicy.single_run(),
    name="dbt_models",
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: PostgresWarehouse):
    yield from run_build(context, dbt, warehouse)
