"""Shared pieces of the fault tests: a large source to load, the bronze asset in a job that
retries like the domain jobs, and finding the warehouse session that is COPYing."""

import itertools
import json
import os
import re
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from dw_platform.defs.customer.assets import customer_profile_raw
from dw_platform.lib.odbc import OdbcSource
from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.samples import customer as customer_sample

DAY = date(2026, 11, 10)
ROWS = 300_000


def seed(source, rows: int = ROWS) -> None:
    source.execute(customer_sample.DDL)
    columns = ", ".join(customer_sample.COLUMNS)
    with source.cursor().copy(f"copy dbo.customer_profile ({columns}) from stdin") as copy:
        generated = itertools.islice(customer_sample.generate(rows, DAY + timedelta(days=1), days=1), rows)
        for i, row in enumerate(generated):
            copy.write_row((i + 1, *row[1:]))  # unique ids: no exact duplicates, one version each


def resources(host: str, port: int, user: str, password: str, warehouse_db: str, source_odbc: str) -> dict:
    return {
        "warehouse": PostgresWarehouse(host=host, port=port, user=user, password=password, database=warehouse_db),
        "customer_source": OdbcSource(connection_string=source_odbc, dialect="postgresql", name="customer_crm"),
    }


def session_resources() -> dict:
    return resources(
        os.environ["DW_PG_HOST"],
        int(os.environ["DW_PG_PORT"]),
        os.environ["DW_PG_USER"],
        os.environ["DW_PG_PASSWORD"],
        os.environ["DW_PG_DATABASE"],
        os.environ["DW_CUSTOMER_ODBC"],
    )


def materialize(res: dict, retries: int = 0) -> dg.ExecuteInProcessResult:
    """The bronze asset for DAY, in a job that retries failed steps `retries` times at once when
    the failure allows it (as the domain jobs do, with backoff)."""
    job = dg.define_asset_job(
        "load",
        [customer_profile_raw],
        partitions_def=customer_profile_raw.partitions_def,
        op_retry_policy=dg.RetryPolicy(max_retries=retries),
    )
    definitions = dg.Definitions(assets=[customer_profile_raw], jobs=[job], resources=res)
    return definitions.resolve_job_def("load").execute_in_process(partition_key=DAY.isoformat(), raise_on_error=False)


def retried(result: dg.ExecuteInProcessResult) -> bool:
    return any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def copying_backend(admin, database: str, timeout_s: float = 60) -> int:
    """The pid of the session COPYing into bronze in `database`, once it streams."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = admin.execute(
            "select pid from pg_stat_activity where datname = %s and state = 'active' and query ilike 'copy%%'",
            (database,),
        ).fetchone()
        if row:
            return row[0]
        time.sleep(0.05)
    raise AssertionError("the load never started copying")


def step_failure(result: dg.ExecuteInProcessResult):
    return next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data


def start_child_run(job: str, partition_key: str, tags: dict[str, str]) -> subprocess.Popen:
    """Run `job` of the code location for one partition in a child process (`run_job.py`), on the
    session's instance, as a run worker would: a process the test can kill by its pid."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("run_job.py")), job, partition_key, json.dumps(tags)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until(condition, timeout_s: float = 120, what: str = "the condition", poll_s: float = 0.02):
    """The condition's first true value, checked every `poll_s`; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)
    return value


def fast_retry_job(name: str, assets: list, res: dict, max_retries: int, delay: float):
    """A job of the same name and assets as the code location's, retrying after `delay` seconds
    (the domain jobs wait 30 s, 60 s, 120 s), so a test sees the retry in seconds."""
    job = dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*assets),
        op_retry_policy=dg.RetryPolicy(max_retries=max_retries, delay=delay),
    )
    return dg.Definitions(assets=assets, jobs=[job], resources=res).resolve_job_def(name)


def wait_for(condition, timeout_s: float, what: str):
    """`wait_until` at the pace of a run under the daemon (every 0.5 s)."""
    return wait_until(condition, timeout_s, what, poll_s=0.5)


def submit(client, day: date = DAY, **kwargs) -> str | None:
    """Launch customer_daily for `day` from the UI's API; None while the webserver cannot (the
    code location still loading, or its first database request after an outage failing)."""
    from dagster_graphql import DagsterGraphQLClientError

    try:
        return client.submit_job_execution("customer_daily", tags={"dagster/partition": day.isoformat()}, **kwargs)
    except DagsterGraphQLClientError:
        return None


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for entry in instance.all_logs(run_id):
        found = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
        if found:
            return int(found.group(1))
    return None
