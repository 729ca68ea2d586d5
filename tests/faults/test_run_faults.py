"""A run whose process dies under the real Dagster daemon (`dagster dev`: webserver, daemon, code
server, the instance of dagster.yaml on PostgreSQL) ends as a failure and is retried without a
person, and the retry loads the partition exactly once."""

import os
import signal
import time
from datetime import date

import dagster as dg
import psutil
from faultkit import ROWS, copying_backend, run_worker_pid, seed, submit, wait_for

from dw_platform.devenv import embedded
from dw_platform.lib.warehouse import server_connection


def start_a_load(client, instance: dg.DagsterInstance, databases, source) -> tuple[str, int]:
    """A run of the seeded source launched through the webserver, once its worker is COPYing into
    bronze: (run id, the worker's pid)."""
    seed(source)
    run_id = wait_for(lambda: submit(client), 180, "the code location to load and take the run")
    worker = wait_for(lambda: run_worker_pid(instance, run_id), 180, "the run worker to start")
    with embedded.admin_connection("postgres") as admin:
        copying_backend(admin, databases["warehouse"], timeout_s=300)
    return run_id, worker


def assert_retried_to_success(instance: dg.DagsterInstance, run_id: str, launching: str) -> None:
    """Run retries launched a retry of the failed run (`launching` says where), and it succeeded."""
    retries = wait_for(lambda: instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id})), 120, launching)
    finished = wait_for(
        lambda: (r := instance.get_run_by_id(retries[0].run_id)).is_finished and r, 600, "the retry to finish"
    )
    assert finished.status == dg.DagsterRunStatus.SUCCESS


def assert_loaded_once(warehouse) -> None:
    assert warehouse.execute(
        "select count(*), count(distinct customer_id) from bronze.customer_profile_raw"
    ).fetchone() == (ROWS, ROWS)


def test_a_killed_run_is_marked_failed_and_retried_to_success(databases, source, warehouse, dagster_dev):
    client, instance = dagster_dev.client, dagster_dev.instance
    run_id, pid = start_a_load(client, instance, databases, source)
    os.kill(pid, signal.SIGKILL)

    assert wait_for(
        lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE,
        60,
        "the killed run to be marked failed",
    )
    assert_retried_to_success(instance, run_id, "run retries to launch a retry")
    assert_loaded_once(warehouse)
    # The killed attempt is `abandoned` (killed mid-COPY) or, if its commit beat the kill,
    # `succeeded` and the retry's load added nothing; either way every row is there once.
    ledger = warehouse.execute("select status, rows_loaded from bronze.batch_ledger order by started_at").fetchall()
    assert ledger[-1][0] == "succeeded" and "running" not in {status for status, _ in ledger}
    assert sum(rows for status, rows in ledger if status == "succeeded") == ROWS


def test_a_killed_code_server_comes_back_by_itself_and_its_run_is_failed_and_retried_to_success(
    databases, source, warehouse, dagster_dev
):
    """kill -9 of `dagster api grpc` mid-load: the location is back without a person, the run the
    server ran (its worker dies with it) is failed instead of left STARTED, run retries load the
    partition exactly once on the new server, and a launch from the UI works again."""
    client, instance, stack = dagster_dev.client, dagster_dev.instance, dagster_dev.stack
    run_id, worker = start_a_load(client, instance, databases, source)
    (code_server,) = stack.code_server.api_grpc_pids()
    os.kill(code_server, signal.SIGKILL)

    assert wait_for(
        lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE,
        180,
        "the code server's run to be marked failed",
    )
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
    assert stack.code_server.api_grpc_pids() not in ([], [code_server])  # a new server
    assert_retried_to_success(instance, run_id, "run retries to launch a retry on the new code server")
    assert_loaded_once(warehouse)
    assert "running" not in {status for (status,) in warehouse.execute("select status from bronze.batch_ledger")}
    assert submit(client)  # the webserver reloaded the location too


def latest_attempt(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    """The run, or the newest of the retries run retries launched for it."""
    retries = instance.get_runs(dg.RunsFilter(tags={"dagster/root_run_id": run_id}), limit=1)
    return retries[0] if retries else instance.get_run_by_id(run_id)


def test_after_the_instance_database_is_killed_mid_load_a_run_killed_later_is_still_failed_within_seconds(
    databases, source, warehouse, dagster_dev
):
    """kill -9 of the PostgreSQL postmaster mid-COPY (the warehouse and the Dagster instance live
    there), and of the run's worker while the server is down (the code server's own check of dead
    runs stops at that database error): `dw dev` starts the server again, the run ends with the
    partition loaded exactly once, and a run whose worker is killed after the outage is failed
    within seconds, as before it."""
    client, instance = dagster_dev.client, dagster_dev.instance
    run_id, worker = start_a_load(client, instance, databases, source)
    postmaster = psutil.Process(int((embedded.state_dir() / "pg" / "postmaster.pid").read_text().split()[0]))
    postmaster.kill()
    os.kill(worker, signal.SIGKILL)

    def answers() -> bool:
        try:
            with embedded.admin_connection("postgres") as admin:
                return admin.execute("select 1").fetchone() == (1,)
        except embedded.psycopg.OperationalError:
            return False

    wait_for(answers, 120, "`dw dev` to start PostgreSQL again")
    ended = wait_for(
        lambda: (r := latest_attempt(instance, run_id)).status == dg.DagsterRunStatus.SUCCESS and r,
        900,
        "the interrupted load (or its retry) to succeed",
    )
    assert ended.status == dg.DagsterRunStatus.SUCCESS
    with server_connection(databases["warehouse"]) as wh:  # the fixture's connection died with the server
        assert_loaded_once(wh)

    # A day without source rows: the worker is killed while it loads the job.
    later = wait_for(lambda: submit(client, date(2026, 12, 20)), 60, "the webserver to take the run")
    worker = wait_for(lambda: run_worker_pid(instance, later), 180, "the later run's worker to start")
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: instance.get_run_by_id(later).is_finished, 120, "the later run to be marked failed")
    assert instance.get_run_by_id(later).status == dg.DagsterRunStatus.FAILURE
    assert time.monotonic() - killed_at < 30
