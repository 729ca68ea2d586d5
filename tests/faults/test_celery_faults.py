"""Faults of the Celery cluster (DW_EXECUTOR=celery, 2 workers, a Redis of the module's own) in the
middle of a bronze load: a worker killed with kill -9, Redis stopped for 30 s. Each run ends within
a bounded time, failed or retried to success; a re-run leaves every source row in bronze once; the
queue keeps moving afterwards (the next day's whole job, dbt build included, succeeds on the
workers). The runs hit by a fault load bronze only (the load and its checks): the dbt build of
300,000 customers after it would take minutes and is no part of the fault.

The tests take turns on one cluster, one seeded source and one run process (seeding 300,000 rows,
starting workers and loading the code location in a run process cost a minute under load), each on
a fresh warehouse; a test that needs other worker settings starts the workers again."""

import os
import signal
import time
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import date, timedelta

import dagster as dg
import psutil
import pytest
from clusterkit import cluster, fresh_warehouse, step_workers, wait_until
from faultkit import ROWS, copying_backend, seed

from dw_platform.devenv import embedded
from dw_platform.devenv.runs import run_here, run_pool
from dw_platform.lib.warehouse import server_connection

# Each test runs up to two loads of 300,000 rows and a day's whole job: more than the default
# limit when the machine's two cores are shared.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

DAY = date(2026, 11, 10)
STEP = "bronze__customer_profile_raw"
BRONZE = [dg.AssetKey(["bronze", "customer_profile_raw"])]


class Cluster:
    def __init__(self, broker, workers, runs: ProcessPoolExecutor):
        self.broker, self.workers, self.runs = broker, workers, runs

    def start_run(self, day: date, assets: list[dg.AssetKey] | None = BRONZE) -> Future:
        """customer_daily for `day` on the run process (its bronze load and checks: the faults hit
        the load; the dbt build of 300,000 customers after it takes minutes under load and is not
        what they test); (run id, success) when it ends."""
        return self.runs.submit(run_here, "customer_daily", day.isoformat(), None, assets)

    def run(self, day: date, assets: list[dg.AssetKey] | None = BRONZE) -> tuple[str, bool]:
        return self.start_run(day, assets).result(timeout=900)


@pytest.fixture(scope="module")
def celery(server, tmp_path_factory):
    """A source of ROWS customers on DAY, Redis, 2 workers and a run process for the module."""
    name = f"src_{uuid.uuid4().hex[:8]}"
    embedded.create_source_database(name)
    try:
        with embedded.admin_connection(name) as source:
            seed(source)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("DW_PG_DATABASE", "warehouse")
            env.setenv(
                "DW_CUSTOMER_ODBC",
                embedded.odbc_connection_string(
                    os.environ["DW_PG_HOST"],
                    int(os.environ["DW_PG_PORT"]),
                    name,
                    os.environ["DW_PG_USER"],
                    os.environ["DW_PG_PASSWORD"],
                ),
            )
            with (
                cluster(tmp_path_factory.mktemp("celery"), env, workers=2, wait=False) as (broker, workers),
                run_pool(1, warm=True) as runs,
            ):
                workers.wait_ready()
                yield Cluster(broker, workers, runs)
    finally:
        with embedded.admin_connection("postgres") as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def warehouse(celery):
    """A fresh warehouse for the test, as the pipeline role (the module's source stays)."""
    fresh_warehouse()
    with server_connection("warehouse") as conn:
        yield conn


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


def the_queue_keeps_moving(celery: Cluster, instance) -> None:
    """The next day's whole job (bronze, its checks, the dbt build) succeeds on the workers."""
    run_id, success = celery.run(DAY + timedelta(days=1), assets=None)
    assert success and step_workers(instance, [run_id])


def test_a_worker_killed_mid_step_ends_its_run_and_a_re_run_loads_the_day_exactly_once(celery, warehouse, instance):
    celery.workers.ensure(2)
    run = celery.start_run(DAY)
    run_id, pid = running_step_pid(instance)
    os.kill(pid, signal.SIGKILL)  # the process executing the step (the OOM killer's choice)
    started = time.monotonic()
    ended_id, success = run.result(timeout=300)
    assert ended_id == run_id and time.monotonic() - started < 300
    if not success:  # the worker reported its step process lost: the run failed as one run retries retry
        assert instance.get_run_by_id(run_id).tags["dagster/failure_reason"] == "RUN_EXCEPTION"
        _, success = celery.run(DAY)
    assert success
    bronze_is_exact(warehouse)
    the_queue_keeps_moving(celery, instance)


def test_redis_stopped_for_30_s_mid_step_is_waited_out_and_the_day_loads_exactly_once(celery, warehouse, instance):
    celery.workers.ensure(2)
    run = celery.start_run(DAY)
    run_id, _pid = running_step_pid(instance)
    celery.broker.stop()
    try:
        time.sleep(30)
    finally:
        celery.broker.start()  # on the same port, for the module's next tests too
    ended_id, success = run.result(timeout=600)
    assert ended_id == run_id
    if not success:
        _, success = celery.run(DAY)
    assert success
    bronze_is_exact(warehouse)
    the_queue_keeps_moving(celery, instance)


def test_a_whole_worker_lost_mid_step_hands_the_step_to_the_other_worker_and_the_run_succeeds(
    celery, warehouse, instance, monkeypatch
):
    """The worker and its step process killed together (its machine lost): the unacknowledged step
    goes back to the queue after the visibility timeout (30 s here) and the other worker runs it."""
    monkeypatch.setenv("DW_CELERY_VISIBILITY_TIMEOUT_S", "30")
    celery.workers.ensure(2)  # started again on the 30 s timeout
    run = celery.start_run(DAY)
    run_id, pid = running_step_pid(instance)
    worker = psutil.Process(pid).parent()
    os.killpg(worker.pid, signal.SIGKILL)  # the worker leads its process group (dw workers starts it so)
    ended_id, success = run.result(timeout=600)
    assert ended_id == run_id and success
    hosts = step_workers(instance, [run_id])[run_id]
    assert len(hosts) == 2, hosts  # the bronze step was executed by both: started on one, finished on the other
    bronze_is_exact(warehouse)
