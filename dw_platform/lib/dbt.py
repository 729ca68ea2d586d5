"""The dbt project (silver + gold) as Dagster assets: project handle, translator, run arguments."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import timezone
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject

from dw_platform.lib.domains import asset_attributes
from dw_platform.lib.embedded import PROJECT_ROOT


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


class DomainTranslator(DagsterDbtTranslator):
    """Models get the key [layer, name] (meeting the bronze assets' [bronze, name]) and their
    domain's group, tag and owner, so a domain reads bronze -> silver -> gold in one group."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id)
        placed = layer_and_domain(node["fqn"]) if node and node["resource_type"] in ("model", "seed", "snapshot") else None
        if placed is None:
            return spec
        layer, domain = placed
        attributes = asset_attributes(domain)
        return spec.replace_attributes(
            key=dg.AssetKey([layer, node["name"]]), group_name=attributes["group_name"], owners=attributes["owners"]
        ).merge_attributes(tags=attributes["tags"])


TRANSLATOR = DomainTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def window_vars(window: dg.TimeWindow) -> dict[str, str]:
    """dbt vars for a partition window: incremental models read and replace [min_date, max_date)."""
    fmt = "%Y-%m-%d %H:%M:%S"
    return {"min_date": window.start.astimezone(timezone.utc).strftime(fmt),
            "max_date": window.end.astimezone(timezone.utc).strftime(fmt)}


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
        f"dbt error: {r['unique_id']}: {' '.join(str(r.get('message') or '').split())[:300]}" for r in errored]
    transient = any(_CONNECTION_LOST.search(str(r.get("message") or "")) for r in errored)
    return dg.Failure(
        description="\n".join(lines) or "dbt failed; see the step's logs",
        metadata={"failed_tests": len(failed), "errors": len(errored)},
        allow_retries=transient or not results,
    )


def run_build(context: dg.AssetExecutionContext, dbt: DbtCliResource, vars_: Mapping[str, str] | None = None):
    """`dbt build` for the selected models, streaming asset and check events to Dagster."""
    invocation = dbt.cli(build_args(vars_), context=context, raise_on_error=False)
    yield from invocation.stream()
    if not invocation.is_successful():
        raise failure_from(invocation.get_artifact("run_results.json"))


def build_args(vars_: Mapping[str, str] | None = None) -> list[str]:
    """`dbt build` arguments; vars are passed as JSON so timestamps survive quoting."""
    return ["build", *(["--vars", json.dumps(dict(vars_), sort_keys=True)] if vars_ else [])]
