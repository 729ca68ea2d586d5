"""Silver and gold: the dbt project, split by partitioning.

Models tagged `customer_daily` (incremental) are partitioned like the bronze they read and
replace only their window; everything else (SCD2 dimension, bridges, facts, the sales models,
whose bronze is partitioned per blob) is rebuilt in one unpartitioned run. A new incremental
model joins the daily partitioned set only when it carries the tag.
dbt tests become asset checks; an error-severity failure stops dbt building what depends on it.
"""

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from dw_platform.defs.customer.partitions import customer_daily
from dw_platform.lib.dbt import DBT_PROJECT, TRANSLATOR, run_build, window_vars

DBT_PROJECT.prepare_if_dev()

# Selected by tag, not by materialization: not every incremental model is daily-partitioned.
CUSTOMER_DAILY = "tag:customer_daily"


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path,
    select=CUSTOMER_DAILY,
    partitions_def=customer_daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    dagster_dbt_translator=TRANSLATOR,
    name="dbt_incremental_models",
)
def dbt_incremental_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    yield from run_build(context, dbt, window_vars(context.partition_time_window))


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path,
    exclude=CUSTOMER_DAILY,
    dagster_dbt_translator=TRANSLATOR,
    name="dbt_models",
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    yield from run_build(context, dbt)
