"""The dbt project (silver + gold) as Dagster assets: project handle, translator, run arguments."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, DbtProject
from packaging.version import Version
from pydantic import PrivateAttr

from dw_platform.lib import migrations
from dw_platform.lib.dbt_invocations import (
    interrupt_again_after_the_step,
    parent_env,
    prune_invocation_folders,
    read_in_background,
    stop,
)
from dw_platform.lib.dbt_lineage import with_column_lineage, with_column_schema
from dw_platform.lib.partition_rows import record_daily_row_counts, rows_per_day, table_rows
from dw_platform.lib.paths import PROJECT_ROOT
from dw_platform.lib.warehouse import PostgresWarehouse


def _put_dbt_on_path() -> None:
    """dbt is installed beside this interpreter. `dagster dev` started without activating the
    virtualenv (and dagster-dbt's manifest preparer, which runs plain `dbt`) must still find it."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


_put_dbt_on_path()
DBT_PROJECT = DbtProject(project_dir=PROJECT_ROOT / "dbt_project", profiles_dir=PROJECT_ROOT / "dbt_project")


# Folders dbt (or Python, for the lint's helpers) writes into; they never make the manifest stale.
_DBT_OUTPUT_DIRS = {"target", "dbt_packages", "logs", "__pycache__"}


def _parse_inputs() -> str:
    """What a parse depends on beyond the models: the newest project file, and the environment
    variables profiles.yml and dbt_project.yml read (dbt re-parses the whole project at every run
    when they differ from the last parse). Secrets are left out of this record."""
    project = DBT_PROJECT
    newest = 0.0
    for folder, subfolders, files in os.walk(project.project_dir):
        subfolders[:] = [name for name in subfolders if name not in _DBT_OUTPUT_DIRS]
        newest = max([newest, *(os.stat(os.path.join(folder, name)).st_mtime for name in files)])
    configs = (project.profiles_dir / "profiles.yml").read_text() + (
        project.project_dir / "dbt_project.yml"
    ).read_text()
    names = sorted(set(re.findall(r"env_var\(\s*['\"](\w+)['\"]", configs)))
    settings = {name: os.environ.get(name) for name in names if not re.search("PASSWORD|SECRET|TOKEN|KEY", name)}
    return json.dumps({"newest_file": newest, "settings": settings}, sort_keys=True)


def prepare_manifest() -> None:
    """`dbt parse` (~6 s here) unless the manifest was parsed from the same files and settings."""
    record = DBT_PROJECT.manifest_path.with_name("manifest_inputs.json")
    inputs = _parse_inputs()
    if DBT_PROJECT.manifest_path.exists() and record.exists() and record.read_text() == inputs:
        return
    print("dw_platform: dbt parse (a project file or a connection setting changed)", file=sys.stderr)
    # Plain `dbt parse`, not dagster-dbt's preparer: the partial-parse state that one writes has no
    # checksums for seed files, so every run's dbt would re-parse the seeds and what reads them (~2 s).
    folders = ["--project-dir", str(DBT_PROJECT.project_dir), "--profiles-dir", str(DBT_PROJECT.profiles_dir)]
    parsed = subprocess.run(["dbt", "--quiet", "parse", *folders], capture_output=True, text=True)
    if parsed.returncode:
        raise RuntimeError(f"dbt parse failed (exit {parsed.returncode}):\n{(parsed.stdout + parsed.stderr)[-4000:]}")
    record.write_text(inputs)


def prepare_if_dev() -> None:
    """dagster-dbt's `prepare_if_dev` re-parses the project every time the code loads under
    `dagster dev`: in the code server, and again in every run's process before its first step.
    Parse only when a project file or a connection setting changed: the code server still picks
    up an edited model, and a run reuses the manifest the code server wrote."""
    if DBT_PROJECT.preparer.using_dagster_dev():
        prepare_manifest()


class DbtCli(DbtCliResource):
    """dagster-dbt's dbt resource, minus one `dbt --version` per invocation: dagster-dbt asks the
    dbt executable for its version before every command, and dbt answers only after asking PyPI
    for the latest release (two requests, 1 s timeout each): 1.4 s of every run here, and a
    network call from every production run. The version is the installed dbt-core's, which is
    the dbt this resource runs (dbt is installed beside the interpreter, see above).

    And no dbt it starts outlives its run (`dbt_invocations`): with `dbt_executable="dw-dbt"` the
    kernel kills dbt with the process that started it, and a dbt still running when the run's
    resources are torn down (an interrupted step: Dagster's terminate) is stopped then, before
    the run is marked canceled or failed."""

    _processes: list[subprocess.Popen] = PrivateAttr(default_factory=list)

    @cached_property
    def _cli_version(self) -> Version:
        return Version(importlib.metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args) -> None:
        """No dbt adapter in the run's process: dagster-dbt sets one up before every invocation
        (2-3 s) only for its `fetch_column_metadata` and `fetch_row_counts`, which `run_build` does
        not use: it reads columns and row counts on its own connection (lib/dbt_lineage.py)."""
        return None

    def cli(self, args, **kwargs) -> DbtCliInvocation:
        with environment(parent_env()):
            invocation = super().cli(args, **kwargs)
        self._processes.append(invocation.process)
        return invocation

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for process in self._processes:
            stop(process)


def layer_and_domain(fqn: list[str]) -> tuple[str, str] | None:
    """The medallion layer and domain of a dbt node, from its folder:
    models/silver/<domain>/x.sql (fqn [project, silver, <domain>, x]) -> ('silver', '<domain>')."""
    if len(fqn) > 3 and fqn[1] in ("silver", "gold"):
        return fqn[1], fqn[2]
    return None


def follows_upstream() -> dg.AutomationCondition:
    """Dagster's `eager()` for every partition, not only the latest: a model is rebuilt after any
    upstream partition it reads was updated (a fresh bronze partition -> its silver partition and
    the gold tables on silver), once every upstream holds data. A table built on a partitioned
    parent waits for some partition of it, not for all (most days of a daily source may be empty).
    A run that updates the parent and the model together (a domain job) triggers nothing more,
    and nothing waits for or repeats what a queued or running run will build.

    A dbt seed (kind `seed`, a reference list) rebuilt is not an update: every domain job rebuilds
    its seeds, so each run would otherwise rebuild every other partition built on them. A changed
    seed is a code change: rebuild what reads it with its domain job."""
    updated = dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.kind("seed"))
    return (
        (dg.AutomationCondition.newly_missing() | updated).since_last_handled()
        & dg.AutomationCondition.all_deps_match(~dg.AutomationCondition.missing())
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follows upstream")


class DomainTranslator(DagsterDbtTranslator):
    """Models get the key [layer, name] (meeting the bronze assets' [bronze, name]) and their
    domain's group, tag and owner (`attributes(domain)`: the domain registry's), so a domain
    reads bronze -> silver -> gold in one group. A model tagged with a key of `partitions` gets that partitions definition (the rest are
    unpartitioned), and every model follows its upstream (`follows_upstream`)."""

    def __init__(
        self,
        attributes: Callable[[str], dict[str, Any]],
        partitions: Mapping[str, dg.PartitionsDefinition] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.attributes = attributes
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
        attributes = self.attributes(domain)
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
    return f"{what}{_scope(test)} {blocks} The step's log names the failing row count; fix the data or the model, then rebuild."


# What a test's `where` placeholders stand for (dbt_project/macros/partition_window.sql).
_WHERE_PLACEHOLDERS = {
    "__changed_customer_versions__": "they are the versions the run's window changed",
    "__changed_customers__": "the customers the run's window changed",
    "__web_log_files__": "the run's log files",
    "__web_changed_days__": "the days of traffic they changed",
    "_built_at >= __run_started_at__": "this dbt invocation built them",
    "__window_start__": "the window's start",
    "__window_end__": "the window's end",
}


def _scope(test: Mapping[str, Any]) -> str:
    """What rows a generic test reads when its `where` narrows it to the run's window (a singular
    test's header comment says so itself)."""
    where = (test.get("config") or {}).get("where")
    if not where or not test.get("test_metadata"):
        return ""
    everything = "a full build" if "__run_started_at__" in where else "an unpartitioned run"
    for placeholder, meaning in _WHERE_PLACEHOLDERS.items():
        where = where.replace(placeholder, meaning)
    return f" Reads only the rows where {where} (all of them in {everything})."


# What an incremental model reads and replaces when a run has no partition: everything. The
# window [DW_MIN_DATE, DW_MAX_DATE) is all time and DW_PARTITION_KEYS empty (every file or blob);
# stated here so a value left in the caller's environment cannot narrow it.
ALL_TIME = {"DW_MIN_DATE": "1900-01-01 00:00:00", "DW_MAX_DATE": "9999-12-31 00:00:00", "DW_PARTITION_KEYS": ""}


def window_env(window: dg.TimeWindow) -> dict[str, str]:
    """A partition window for dbt, as environment variables rather than --vars: dbt re-parses the
    whole project when --vars change (3-4 s on every partition here); the models read these only
    when they execute (dbt_project/macros/partition_window.sql), so a new window re-parses nothing."""
    fmt = "%Y-%m-%d %H:%M:%S"
    return {
        **ALL_TIME,
        "DW_MIN_DATE": window.start.astimezone(timezone.utc).strftime(fmt),
        "DW_MAX_DATE": window.end.astimezone(timezone.utc).strftime(fmt),
    }


def partition_keys_env(run_tags: Mapping[str, str]) -> dict[str, str]:
    """The run's partition of a file- or blob-partitioned job (one blob, one log file) for
    the models incremental by file, as a JSON list; everything when the run has none or a range
    (a single-run backfill of many files rebuilds them all, as a full refresh would)."""
    key = run_tags.get("dagster/partition")
    return {**ALL_TIME, "DW_PARTITION_KEYS": json.dumps([key]) if key else ""}


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in this process's environment (so in the dbt process started inside), restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# What a dbt error says when the warehouse connection, not the model, was at fault.
_CONNECTION_LOST = re.compile(
    r"could not connect|connection refused|server closed the connection|terminating connection"
    r"|connection already closed|SSL SYSCALL|timeout expired|the database system is (starting|shutting) up",
    re.IGNORECASE,
)

# Two runs building the same table at once (a burst of one-file runs on a new warehouse: each run's
# dbt saw no table, the second rename finds the first's): the retry finds the table and replaces it.
_CONCURRENT_BUILD = re.compile(
    r'relation "[^"]+" already exists|deadlock detected|could not serialize access|tuple concurrently updated',
    re.IGNORECASE,
)


def failure_from(run_results: Mapping[str, Any]) -> dg.Failure:
    """A failed dbt invocation as a Failure naming the nodes and what dbt said. Only a lost or
    refused warehouse connection, or a table another run was building at the same moment, may be
    retried: a test that failed on data, SQL the database rejects or a model that does not
    compile fail the same way on every retry."""
    results = run_results.get("results", [])
    failed = [r for r in results if r["status"] == "fail"]
    errored = [r for r in results if r["status"] == "error"]
    lines = [f"dbt test failed: {r['unique_id']}" for r in failed] + [
        f"dbt error: {r['unique_id']}: {' '.join(str(r.get('message') or '').split())[:300]}" for r in errored
    ]
    transient = any(
        pattern.search(str(r.get("message") or ""))
        for r in errored
        for pattern in (_CONNECTION_LOST, _CONCURRENT_BUILD)
    )
    return dg.Failure(
        description="\n".join(lines) or "dbt failed; see the step's logs",
        metadata={"failed_tests": len(failed), "errors": len(errored)},
        allow_retries=transient or not results,
    )


def partition_window(context: dg.AssetExecutionContext) -> dg.TimeWindow | None:
    """The run's partition window (or range) when it builds time-partitioned models; None otherwise,
    e.g. a run of a blob-partitioned asset, whose partition means nothing to dbt. A window that
    holds the first partition starts at the beginning of time: a first partition's bronze load is
    the history load of everything before it (`LoadScope.with_history`), which its models take too."""
    specs = context.assets_def.specs_by_key
    time_partitions = [
        specs[key].partitions_def
        for key in context.selected_asset_keys
        if isinstance(specs[key].partitions_def, dg.TimeWindowPartitionsDefinition)
    ]
    if not time_partitions:
        return None
    window = context.partition_time_window
    if window.start <= time_partitions[0].start:
        history = datetime.fromisoformat(ALL_TIME["DW_MIN_DATE"]).replace(tzinfo=timezone.utc)
        return dg.TimeWindow(history, window.end)
    return window


# dbt's unit tests check the models' SQL on fixed rows, not the data: the test suite runs them
# (`dbt test --select test_type:unit`), a run does not (dbt's advice for production runs).
BUILD_ARGS = ["build", "--exclude-resource-type", "unit_test"]
# A test runs when every model it reads is built by the run or upstream of it (dbt's default,
# `eager`, runs a test when any of them is: building silver alone ran the singular tests of the
# gold dimension, which also read silver, before the dimension existed). dagster-dbt still turns
# this to `empty` when the run excludes some checks of its assets.
INDIRECT_SELECTION = "buildable"


def run_build(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: PostgresWarehouse, full_refresh: bool = False
):
    """`dbt build` for the selected models (seeds, models and their tests in one invocation),
    streaming asset and check events to Dagster. `full_refresh` rebuilds incremental models from
    everything, whatever the run's partitions."""
    window = partition_window(context)
    if full_refresh:
        env = ALL_TIME
    else:
        env = window_env(window) if window else partition_keys_env(context.run.tags)
    context.log.info(
        f"dbt builds the window DW_MIN_DATE={env['DW_MIN_DATE']}, DW_MAX_DATE={env['DW_MAX_DATE']}"
        + (f", the partitions {env['DW_PARTITION_KEYS']}" if env["DW_PARTITION_KEYS"] else "")
    )
    prune_invocation_folders(DBT_PROJECT.project_dir / DBT_PROJECT.target_path)
    # Typed columns, column lineage (lib/dbt_lineage.py) and row count of every table built, on one
    # connection here (dagster-dbt's fetch_row_counts connects once per table, from a thread of its
    # own: ~3 s of a one-partition run here).
    with warehouse.connect() as conn:
        migrations.migrate(conn)  # e.g. a renamed model's table renamed before dbt looks for it
        with environment({**env, "DBT_INDIRECT_SELECTION": INDIRECT_SELECTION}):
            invocation = dbt.cli(
                BUILD_ARGS + (["--full-refresh"] if full_refresh else []), context=context, raise_on_error=False
            )

        def asset_key_of(unique_id: str) -> dg.AssetKey:
            return invocation.dagster_dbt_translator.get_asset_spec(invocation.manifest, unique_id, DBT_PROJECT).key

        try:
            for event in read_in_background(invocation.stream()):
                if isinstance(event, dg.Output):
                    event = with_column_schema(event, conn, invocation.manifest)
                    event = with_column_lineage(
                        event, conn, invocation.manifest, invocation.target_path, asset_key_of, context.log.warning
                    )
                    event = _with_row_count(conn, invocation.manifest, event)
                    if window:
                        _record_partition_rows(context, conn, invocation.manifest, event)
                yield event
        except dg.DagsterExecutionInterruptedError:  # a terminate ends the run, not this attempt
            interrupt_again_after_the_step()
            raise
    if not invocation.is_successful():
        raise failure_from(invocation.get_artifact("run_results.json"))


def _with_row_count(conn: psycopg.Connection, manifest: Mapping[str, Any], output: dg.Output) -> dg.Output:
    """The output with `dagster/row_count`: the rows of the table dbt built (views are not counted);
    for a large table the planner's estimate, marked `row_count_estimated` (lib/partition_rows.py)."""
    node = manifest["nodes"].get(output.metadata["unique_id"].value, {})
    if node.get("config", {}).get("materialized") not in ("table", "incremental", "seed"):
        return output
    return output.with_metadata({**output.metadata, **table_rows(conn, f"{node['schema']}.{node['alias']}")})


def _record_partition_rows(
    context: dg.AssetExecutionContext, conn: psycopg.Connection, manifest: Mapping[str, Any], output: dg.Output
) -> None:
    """A daily-partitioned model's rows per day of the run, so each partition of a range shows its
    own count (the model's `meta.partition_column` names the day column)."""
    key = context.asset_key_for_output(output.output_name)
    node = manifest["nodes"].get(output.metadata["unique_id"].value, {})
    column = node.get("config", {}).get("meta", {}).get("partition_column")
    if not column or context.assets_def.specs_by_key[key].partitions_def is None:
        return
    window = context.partition_time_window
    counts = rows_per_day(conn, f"{node['schema']}.{node['alias']}", column, window.start, window.end)
    record_daily_row_counts(context, key, context.partition_keys, counts)
