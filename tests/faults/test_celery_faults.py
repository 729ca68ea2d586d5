"""Faults of the Celery cluster (DW_EXECUTOR=celery, 2 workers, a Redis of the test's own) in the
middle of a bronze load: a worker killed with kill -9, Redis stopped for 30 s. Each run ends within
a bounded time, failed or retried to success; a re-run leaves every source row in bronze once; the
queue keeps moving afterwards (the next run succeeds on the workers)."""

import os
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import date, timedelta
from multiprocessing import get_context

import dagster as dg
import psutil
import pytest
from clusterkit import cluster, step_workers, wait_until
from faultkit import ROWS, copying_backend, seed

from dw_platform.devenv import embedded
from dw_platform.devenv.runs import run_jobs

# Each test runs about three loads of 300,000 rows and their dbt builds: more than the default
# limit when the machine's two cores are shared.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

DAY = date(2026, 11, 10)
STEP = "bronze__customer_profile_raw"


def start_run(pool: ProcessPoolExecutor, day: date) -> Future:
    return pool.submit(run_jobs, [("customer_daily", day.isoformat(), None)], 1)


def running_step_pid(instance: dg.DagsterInstance) -> tuple[str, int]:
    """The run in progress and the pid of the process executing its bronze step, once it COPYs."""

    def found():
        for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=5):
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START):
                if entry.step_key == STEP:
                    return run.run_id, entry.dagster_event.pid
        return None

    run_id, pid = wait_until(found, 300, "the bronze step to start on a worker")
    with embedded.admin_connection("postgres") as admin:
        copying_backend(admin, "warehouse", timeout_s=300)
    return run_id, pid


def bronze_is_exact(warehouse) -> None:
    assert warehouse.execute(
        "select count(*), count(distinct customer_id) from bronze.customer_profile_raw"
    ).fetchone() == (ROWS, ROWS)
    ledger = warehouse.execute("select status from bronze.batch_ledger").fetchall()
    assert ("running",) not in ledger and ("succeeded",) in ledger


def the_queue_keeps_moving(instance) -> None:
    ((run_id, success),) = run_jobs([("customer_daily", (DAY + timedelta(days=1)).isoformat(), None)], 1)
    assert success and step_workers(instance, [run_id])


def test_a_worker_killed_mid_step_ends_its_run_and_a_re_run_loads_the_day_exactly_once(
    source, warehouse, instance, tmp_path, monkeypatch
):
    seed(source)
    with cluster(tmp_path, monkeypatch, workers=2), ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        run = start_run(pool, DAY)
        run_id, pid = running_step_pid(instance)
        os.kill(pid, signal.SIGKILL)  # the process executing the step (the OOM killer's choice)
        started = time.monotonic()
        ((ended_id, success),) = run.result(timeout=300)
        assert ended_id == run_id and time.monotonic() - started < 300
        if not success:  # the worker reported its step process lost: the run failed as one run retries retry
            assert instance.get_run_by_id(run_id).tags["dagster/failure_reason"] == "RUN_EXCEPTION"
            ((_, success),) = run_jobs([("customer_daily", DAY.isoformat(), None)], 1)
        assert success
        bronze_is_exact(warehouse)
        the_queue_keeps_moving(instance)


def test_a_whole_worker_lost_mid_step_hands_the_step_to_the_other_worker_and_the_run_succeeds(
    source, warehouse, instance, tmp_path, monkeypatch
):
    """The worker and its step process killed together (its machine lost): the unacknowledged step
    goes back to the queue after the visibility timeout (30 s here) and the other worker runs it."""
    seed(source)
    monkeypatch.setenv("DW_CELERY_VISIBILITY_TIMEOUT_S", "30")
    with cluster(tmp_path, monkeypatch, workers=2), ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        run = start_run(pool, DAY)
        run_id, pid = running_step_pid(instance)
        worker = psutil.Process(pid).parent()
        os.killpg(worker.pid, signal.SIGKILL)  # the worker leads its process group (dw workers starts it so)
        ((ended_id, success),) = run.result(timeout=600)
        assert ended_id == run_id and success
        hosts = step_workers(instance, [run_id])[run_id]
        assert len(hosts) == 2, hosts  # the bronze step was executed by both: started on one, finished on the other
        bronze_is_exact(warehouse)


def test_redis_stopped_for_30_s_mid_step_is_waited_out_and_the_day_loads_exactly_once(
    source, warehouse, instance, tmp_path, monkeypatch
):
    seed(source)
    with (
        cluster(tmp_path, monkeypatch, workers=2) as (broker, _workers),
        ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool,
    ):
        run = start_run(pool, DAY)
        run_id, _pid = running_step_pid(instance)
        broker.stop()
        time.sleep(30)
        broker.start()
        ((ended_id, success),) = run.result(timeout=600)
        assert ended_id == run_id
        if not success:
            ((_, success),) = run_jobs([("customer_daily", DAY.isoformat(), None)], 1)
        assert success
        bronze_is_exact(warehouse)
        the_queue_keeps_moving(instance)
