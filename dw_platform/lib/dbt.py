"""The dbt project (silver + gold) as Dagster assets: project handle, translator, run arguments."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from datetime import timezone
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject

from dw_platform.lib.domains import asset_attributes
from dw_platform.lib.embedded import PROJECT_ROOT
from dw_platform.lib.partition_rows import record_daily_row_counts, rows_per_day
from dw_platform.lib.warehouse import PostgresWarehouse


def _put_dbt_on_path() -> None:
    """dbt is installed beside this interpreter. `dagster dev` started without activating the
    virtualenv (and dagster-dbt's manifest preparer, which runs plain `dbt`) must still find it."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


_put_dbt_on_path()
DBT_PROJECT = DbtProject(project_dir=PROJECT_ROOT / "dbt_project", profiles_dir=PROJECT_ROOT / "dbt_project")


def layer_and_domain(fqn: list[str]) -> tuple[str, str] | None:
    """The medallion layer and domain of a dbt node, from its folder:
    models/silver/customer/x.sql (fqn [project, silver, customer, x]) -> ('silver', 'customer')."""
    if len(fqn) > 3 and fqn[1] in ("silver", "gold"):
        return fqn[1], fqn[2]
    return None


def follows_upstream() -> dg.AutomationCondition:
    """Dagster's `eager()` for every partition, not only the latest: a model is rebuilt after any
    upstream partition it reads was updated (a fresh bronze partition -> its silver partition and
    the gold tables on silver), once every upstream holds data. A table built on a partitioned
    parent waits for some partition of it, not for all (most days of a daily source may be empty).
    A run that updates the parent and the model together (a domain job) triggers nothing more."""
    return (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
        & dg.AutomationCondition.all_deps_match(~dg.AutomationCondition.missing())
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follows upstream")


class DomainTranslator(DagsterDbtTranslator):
    """Models get the key [layer, name] (meeting the bronze assets' [bronze, name]) and their
    domain's group, tag and owner, so a domain reads bronze -> silver -> gold in one group.
    A model tagged with a key of `partitions` gets that partitions definition (the rest are
    unpartitioned), and every model follows its upstream (`follows_upstream`)."""

    def __init__(self, partitions: Mapping[str, dg.PartitionsDefinition] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.partitions = dict(partitions or {})

    def get_partitions_def(self, dbt_resource_props: Mapping[str, Any]) -> dg.PartitionsDefinition | None:
        tagged = [self.partitions[t] for t in dbt_resource_props.get("tags", []) if t in self.partitions]
        return tagged[0] if tagged else None

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        return follows_upstream() if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot") else None

    def get_asset_check_spec(
        self, asset_spec: dg.AssetSpec, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetCheckSpec | None:
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or spec.description:
            return spec
        return dg.AssetCheckSpec(
            name=spec.name,
            asset=spec.asset_key,
            description=check_description(manifest, manifest["nodes"][unique_id]),
            additional_deps=spec.additional_deps,
            metadata=spec.metadata,
            blocking=spec.blocking,
        )

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id)
        placed = (
            layer_and_domain(node["fqn"]) if node and node["resource_type"] in ("model", "seed", "snapshot") else None
        )
        if placed is None:
            return spec
        layer, domain = placed
        attributes = asset_attributes(domain)
        return spec.replace_attributes(
            key=dg.AssetKey([layer, node["name"]]), group_name=attributes["group_name"], owners=attributes["owners"]
        ).merge_attributes(tags=attributes["tags"], kinds={"seed"} if node["resource_type"] == "seed" else set())


def with_seeds(selection: dg.AssetSelection) -> dg.AssetSelection:
    """The selection and the dbt seeds (reference lists, kind `seed`) its models read, and no other
    upstream asset: a fresh warehouse has no seed tables yet, and a run must not drag in another
    domain's bronze."""
    return selection | (selection.upstream() & dg.AssetSelection.kind("seed"))


def check_description(manifest: Mapping[str, Any], test: Mapping[str, Any]) -> str:
    """What a dbt test checks, what its failure blocks, and how to find the offending rows: a
    singular test's header comment, or a sentence per generic test with the query to run in `dw sql`."""
    blocks = (
        "A failure blocks what is built on it."
        if (test["config"].get("severity") or "error").lower() == "error"
        else "A warning only: nothing is blocked."
    )
    meta = test.get("test_metadata") or {}
    model = manifest["nodes"].get(test.get("attached_node") or "", {})
    relation = f"{model.get('schema')}.{model.get('alias') or model.get('name')}" if model else "the model"
    column, kwargs = test.get("column_name"), meta.get("kwargs", {})
    name = meta.get("name")
    if name == "not_null":
        what = f"Fails when {relation}.{column} is null. Rows: `select * from {relation} where {column} is null`."
    elif name == "unique":
        what = (
            f"Fails when a {column} occurs twice in {relation}. Values: `select {column}, count(*) from {relation} "
            f"group by 1 having count(*) > 1`."
        )
    elif name == "accepted_values":
        listed = ", ".join(f"'{v}'" for v in kwargs.get("values", []))
        what = (
            f"Fails when {relation}.{column} holds a value outside ({listed}). Values: `select {column}, count(*) "
            f"from {relation} where {column} not in ({listed}) group by 1`; map a new value in the model "
            "(or its seed) or add it to the list."
        )
    elif name == "relationships":
        parent = kwargs.get("to", "").replace("ref('", "").replace("')", "")
        what = (
            f"Fails when a {relation}.{column} has no {kwargs.get('field')} in {parent}: a row pointing at "
            "nothing (an orphan), usually because the parent was not loaded for that day yet."
        )
    elif name:
        what = f"dbt test `{name}` on {relation}" + (f".{column}" if column else "") + "."
    else:  # a singular test: its SQL file opens with a comment saying when it fails
        comment = [
            line.strip()[2:].strip()
            for line in test.get("raw_code", "").splitlines()
            if line.strip().startswith("--") and "Dagster asset check" not in line
        ]
        what = " ".join(comment) or f"Singular test {test['name']}."
        what += f" Its query (the failing rows): dbt_project/{test['original_file_path']}."
    return f"{what} {blocks} The step's log names the failing row count; fix the data or the model, then rebuild."


def window_vars(window: dg.TimeWindow) -> dict[str, str]:
    """dbt vars for a partition window: incremental models read and replace [min_date, max_date)."""
    fmt = "%Y-%m-%d %H:%M:%S"
    return {
        "min_date": window.start.astimezone(timezone.utc).strftime(fmt),
        "max_date": window.end.astimezone(timezone.utc).strftime(fmt),
    }


# What a dbt error says when the warehouse connection, not the model, was at fault.
_CONNECTION_LOST = re.compile(
    r"could not connect|connection refused|server closed the connection|terminating connection"
    r"|connection already closed|SSL SYSCALL|timeout expired|the database system is (starting|shutting) up",
    re.IGNORECASE,
)


def failure_from(run_results: Mapping[str, Any]) -> dg.Failure:
    """A failed dbt invocation as a Failure naming the nodes and what dbt said. Only a lost or
    refused warehouse connection may be retried: a test that failed on data, SQL the database
    rejects or a model that does not compile fail the same way on every retry."""
    results = run_results.get("results", [])
    failed = [r for r in results if r["status"] == "fail"]
    errored = [r for r in results if r["status"] == "error"]
    lines = [f"dbt test failed: {r['unique_id']}" for r in failed] + [
        f"dbt error: {r['unique_id']}: {' '.join(str(r.get('message') or '').split())[:300]}" for r in errored
    ]
    transient = any(_CONNECTION_LOST.search(str(r.get("message") or "")) for r in errored)
    return dg.Failure(
        description="\n".join(lines) or "dbt failed; see the step's logs",
        metadata={"failed_tests": len(failed), "errors": len(errored)},
        allow_retries=transient or not results,
    )


def partition_vars(context: dg.AssetExecutionContext) -> dict[str, str] | None:
    """The window vars when the run builds time-partitioned models (for the run's partition or
    range); None otherwise, e.g. a sales run, whose blob partition means nothing to dbt."""
    specs = context.assets_def.specs_by_key
    if not any(
        isinstance(specs[key].partitions_def, dg.TimeWindowPartitionsDefinition) for key in context.selected_asset_keys
    ):
        return None
    return window_vars(context.partition_time_window)


def run_build(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: PostgresWarehouse):
    """`dbt build` for the selected models (seeds, models and their tests in one invocation),
    streaming asset and check events to Dagster."""
    vars_ = partition_vars(context)
    invocation = dbt.cli(build_args(vars_), context=context, raise_on_error=False)
    # Row count, typed columns and column-level lineage of every table built, fetched as it finishes.
    for event in invocation.stream().fetch_row_counts().fetch_column_metadata(with_column_lineage=True):
        if vars_ and isinstance(event, dg.Output):
            _record_partition_rows(context, invocation.manifest, event, warehouse)
        yield event
    if not invocation.is_successful():
        raise failure_from(invocation.get_artifact("run_results.json"))


def _record_partition_rows(
    context: dg.AssetExecutionContext, manifest: Mapping[str, Any], output: dg.Output, warehouse: PostgresWarehouse
) -> None:
    """A daily-partitioned model's rows per day of the run, so each partition of a range shows its
    own count (the model's `meta.partition_column` names the day column)."""
    key = context.asset_key_for_output(output.output_name)
    node = manifest["nodes"].get(output.metadata["unique_id"].value, {})
    column = node.get("config", {}).get("meta", {}).get("partition_column")
    if not column or context.assets_def.specs_by_key[key].partitions_def is None:
        return
    window = context.partition_time_window
    with warehouse.connect() as conn:
        counts = rows_per_day(conn, f"{node['schema']}.{node['alias']}", column, window.start, window.end)
    record_daily_row_counts(context, key, context.partition_keys, counts)


def build_args(vars_: Mapping[str, str] | None = None) -> list[str]:
    """`dbt build` arguments; vars are passed as JSON so timestamps survive quoting."""
    return ["build", *(["--vars", json.dumps(dict(vars_), sort_keys=True)] if vars_ else [])]
