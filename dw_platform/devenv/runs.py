"""Run a job of the code location through the executor DW_EXECUTOR chooses, as a run worker does:
in process (the default) with `execute_in_process`; under Celery with `dg.execute_job`, which needs
a job the workers can rebuild from its module and name (`code_location_job`). For `dw demo`, the
tests and the benchmarks; `dw dev`'s runs take the same path through Dagster's run launcher."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import cache

import dagster as dg

from dw_platform.definitions import defs
from dw_platform.lib.executor import executor_name
from dw_platform.lib.paths import PROJECT_ROOT


@cache
def _definitions(executor: str) -> dg.Definitions:
    return defs()


def code_location_job(name: str) -> dg.JobDefinition:
    """The job `name` of the code location, loaded once per process and executor (a worker runs many steps)."""
    return _definitions(executor_name()).resolve_job_def(name)


def run_job(
    name: str,
    instance: dg.DagsterInstance,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    run_config: dict | None = None,
    definitions: dg.Definitions | None = None,
    assets: list[dg.AssetKey] | None = None,
) -> dg.ExecuteInProcessResult | dg.JobExecutionResult:
    """Run job `name` for `partition_key` (or the partition range in `tags`) on `instance` and wait
    for its end, only its `assets` (and their checks) when given; failures are in the result, not
    raised."""
    if executor_name() == "in_process":
        return (
            (definitions or _definitions("in_process"))
            .resolve_job_def(name)
            .execute_in_process(
                instance=instance,
                partition_key=partition_key,
                tags=tags,
                run_config=run_config,
                raise_on_error=False,
                asset_selection=assets,
            )
        )
    job = dg.build_reconstructable_job(
        __name__, code_location_job.__name__, (name,), reconstructor_working_directory=str(PROJECT_ROOT)
    )
    all_tags = {**(tags or {}), **({"dagster/partition": partition_key} if partition_key else {})}
    with dg.execute_job(
        job, instance, run_config=run_config, tags=all_tags, raise_on_error=False, asset_selection=assets
    ) as result:
        return result


def run_here(
    name: str,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    assets: list[dg.AssetKey] | None = None,
) -> tuple[str, bool]:
    """Run job `name` (only its `assets` when given) in this process on the instance in DAGSTER_HOME:
    (run id, success). What a process of `run_pool` runs."""
    with dg.DagsterInstance.get() as instance:
        result = run_job(name, instance, partition_key=partition_key, tags=tags, assets=assets)
        return result.run_id, result.success


def load_code_location() -> None:
    """Load the code location now (a run process's first run would otherwise wait for it)."""
    _definitions(executor_name())


def run_pool(processes: int = 4, warm: bool = False) -> ProcessPoolExecutor:
    """`processes` run processes for `run_jobs`, spawned (not forked: a fork would inherit this
    process's Dagster and logging state) with the environment of now; `warm` starts them at once,
    each loading the code location, so that the first runs do not wait for it."""
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    if warm:
        for _ in range(processes):
            pool.submit(load_code_location)
    return pool


def run_jobs(
    requests: list[tuple[str, str | None, dict | None]], processes: int = 4, pool: ProcessPoolExecutor | None = None
) -> list[tuple[str, bool]]:
    """Run each (job, partition key, tags) of `requests` on the instance in DAGSTER_HOME, `processes` at
    a time (or on the run processes of `pool`), each in a run process of its own as the run queue
    launches them (one process runs one run at a time: Python's logging set-up is not safe for runs
    on threads of one process); returns (run id, success) in order."""
    if pool is not None:
        return list(pool.map(run_here, *zip(*requests)))
    with run_pool(processes) as own:
        return list(own.map(run_here, *zip(*requests)))
