"""A run whose process dies under the real Dagster daemon (`dagster dev`: webserver, daemon, code
server, the instance of dagster.yaml on PostgreSQL) ends as a failure and is retried without a
person, and the retry loads the partition exactly once."""

import os
import re
import signal
import time
from datetime import date

import dagster as dg
from faultkit import ROWS, copying_backend, seed

from dw_platform.devenv import embedded

DAY = date(2026, 11, 10)


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def submit(client) -> str | None:
    from dagster_graphql import DagsterGraphQLClientError

    try:
        return client.submit_job_execution("customer_daily", tags={"dagster/partition": DAY.isoformat()})
    except DagsterGraphQLClientError:
        return None  # the code location is still loading


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for entry in instance.all_logs(run_id):
        found = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
        if found:
            return int(found.group(1))
    return None


def test_a_killed_run_is_marked_failed_and_retried_to_success(databases, source, warehouse, dagster_dev):
    seed(source)
    client, instance = dagster_dev.client, dagster_dev.instance
    run_id = wait_for(lambda: submit(client), 180, "the code location to load and take the run")
    pid = wait_for(lambda: run_worker_pid(instance, run_id), 180, "the run worker to start")
    with embedded.admin_connection("postgres") as admin:
        copying_backend(admin, databases["warehouse"], timeout_s=300)
    os.kill(pid, signal.SIGKILL)

    assert wait_for(
        lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE,
        60,
        "the killed run to be marked failed",
    )
    retry = wait_for(
        lambda: instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id})),
        120,
        "run retries to launch a retry",
    )[0]
    finished = wait_for(
        lambda: (r := instance.get_run_by_id(retry.run_id)).is_finished and r, 600, "the retry to finish"
    )
    assert finished.status == dg.DagsterRunStatus.SUCCESS
    assert warehouse.execute(
        "select count(*), count(distinct customer_id) from bronze.customer_profile_raw"
    ).fetchone() == (ROWS, ROWS)
    # The killed attempt is `abandoned` (killed mid-COPY) or, if its commit beat the kill,
    # `succeeded` and the retry's load added nothing; either way every row is there once.
    ledger = warehouse.execute("select status, rows_loaded from bronze.batch_ledger order by started_at").fetchall()
    assert ledger[-1][0] == "succeeded" and "running" not in {status for status, _ in ledger}
    assert sum(rows for status, rows in ledger if status == "succeeded") == ROWS
