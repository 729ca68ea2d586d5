"""A run that ends during `dbt build`, by kill -9 of its worker or by Dagster's terminate, takes its
dbt process with it before it is marked failed (or canceled): no dbt goes on writing to the
warehouse beside the next run, and the warehouse sessions it held end within seconds.

dbt is held mid-statement by a lock the test takes on the bronze table the silver model reads
(as a long statement would hold it), under what `dw dev` runs (webserver, daemon, code server)."""

import time
from datetime import date

import dagster as dg
import psutil
from faultkit import materialize, run_worker_pid, seed, session_resources, wait_for

from dw_platform.devenv import embedded

DAY = date(2026, 11, 10)
ROWS = 20_000
SILVER = dg.AssetKey(["silver", "customer_profile_standardized"])
# The silver model and the dbt seeds it reads, as a run from the UI selects them.
SELECTION = [
    SILVER,
    dg.AssetKey(["silver", "customer_country_aliases"]),
    dg.AssetKey(["silver", "customer_country_dial_codes"]),
]


def dbt_process(worker: int) -> psutil.Process | None:
    """The dbt the run worker started (dw-dbt became dbt)."""
    try:
        children = psutil.Process(worker).children()
    except psutil.NoSuchProcess:
        return None
    return next((c for c in children if any(part.endswith("/dbt") for part in c.cmdline())), None)


def waiting_on_the_lock(admin) -> set[int]:
    """The warehouse sessions waiting for the test's lock (dbt's)."""
    rows = admin.execute(
        "select pid from pg_stat_activity where datname = 'warehouse' and wait_event_type = 'Lock'"
    ).fetchall()
    return {pid for (pid,) in rows}


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start_dbt_held_by_the_lock(client, instance, admin) -> tuple[str, psutil.Process, set[int]]:
    run_id = client.submit_job_execution(
        "customer_daily", tags={"dagster/partition": DAY.isoformat()}, asset_selection=SELECTION
    )
    worker = wait_for(lambda: run_worker_pid(instance, run_id), 180, "the run worker to start")
    dbt = wait_for(lambda: dbt_process(worker), 180, "the run to start dbt")
    sessions = wait_for(lambda: waiting_on_the_lock(admin), 180, "dbt to wait for the lock")
    return run_id, dbt, sessions


def test_a_run_killed_or_terminated_during_dbt_build_takes_its_dbt_and_its_sessions_with_it(
    databases, source, warehouse, dagster_dev
):
    seed(source, ROWS)
    assert materialize(session_resources()).success  # bronze for the day, read by the silver model
    client, instance = dagster_dev.client, dagster_dev.instance
    with embedded.admin_connection(databases["warehouse"]) as admin, embedded.admin_connection("warehouse") as lock:
        lock.execute("begin")
        lock.execute("lock table bronze.customer_profile_raw in access exclusive mode")

        # kill -9 of the run worker: dbt dies with it, before the run is seen failed
        killed, dbt, sessions = start_dbt_held_by_the_lock(client, instance, admin)
        psutil.Process(run_worker_pid(instance, killed)).kill()
        wait_for(lambda: instance.get_run_by_id(killed).is_finished, 60, "the killed run to end")
        assert gone(dbt)
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
        wait_for(lambda: not sessions & waiting_on_the_lock(admin), 30, "dbt's sessions to end")

        # Dagster's terminate of the retry (run retries started it; it waits on the lock too)
        retry = wait_for(
            lambda: instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": killed})), 120, "the retry"
        )[0].run_id
        worker = wait_for(lambda: run_worker_pid(instance, retry), 180, "the retry's worker to start")
        dbt = wait_for(lambda: dbt_process(worker), 180, "the retry to start dbt")
        sessions = wait_for(lambda: waiting_on_the_lock(admin), 180, "the retry's dbt to wait for the lock")
        client.terminate_run(retry)
        wait_for(lambda: instance.get_run_by_id(retry).is_finished, 120, "the terminated run to end")
        assert gone(dbt)
        assert instance.get_run_by_id(retry).status == dg.DagsterRunStatus.CANCELED
        wait_for(lambda: not sessions & waiting_on_the_lock(admin), 30, "the retry's dbt sessions to end")

        lock.execute("rollback")
        time.sleep(2)  # a dbt still alive would now write silver
        assert not warehouse.execute("select to_regclass('silver.customer_profile_standardized')").fetchone()[0]

    final = client.submit_job_execution(
        "customer_daily", tags={"dagster/partition": DAY.isoformat()}, asset_selection=SELECTION
    )
    ended = wait_for(lambda: (r := instance.get_run_by_id(final)).is_finished and r, 600, "the next run to end")
    assert ended.status == dg.DagsterRunStatus.SUCCESS
    assert warehouse.execute("select count(*) from silver.customer_profile_standardized").fetchone()[0] == ROWS
