"""Every job's steps on Celery workers over a real Redis (DW_EXECUTOR=celery, the workers `dw workers`
starts): a 7-day customer backfill and a burst of 20 sales blobs on 2 workers build the same
bronze, silver and gold as in process, and both workers take steps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date

import dagster as dg
import psutil
import pytest
from clusterkit import cluster, fresh_warehouse, snapshot, step_pids, step_workers, wait_until

from dw_platform.defs.sales.partitions import INCOMING, sales_blobs
from dw_platform.devenv import embedded
from dw_platform.devenv.runs import code_location_job, run_job, run_jobs, run_pool
from dw_platform.devenv.workers import MIN_UPTIME_S
from dw_platform.lib.paths import PROJECT_ROOT
from dw_platform.lib.warehouse import server_connection
from dw_platform.samples import customer as customer_sample
from dw_platform.samples import sales as sales_sample

pytestmark = pytest.mark.integration

END = date(2026, 11, 17)
BLOBS = 20
BRONZE_SALES = dg.AssetKey(["bronze", "sales"])
RANGE = {
    "dagster/asset_partition_range_start": "2026-11-10",
    "dagster/asset_partition_range_end": "2026-11-16",
}


def upload_burst(storage) -> list[str]:
    keys = [f"burst/orders_{i:02d}.csv" for i in range(BLOBS)]
    for i, key in enumerate(keys):
        rows = list(sales_sample.rows(50, date(2026, 11, 10 + i % 7), seed=100 + i, first_id=1 + 1000 * i))
        storage.upload(INCOMING + key, sales_sample.to_csv(sales_sample.HEADER, rows))
    return keys


def in_process_result(instance: dg.DagsterInstance, keys: list[str]) -> dict:
    """The same loads in process. Silver and gold of sales are rebuilt whole by every run, so one
    full run after the other blobs' bronze gives the tables twenty full runs give."""
    assert run_job("customer_daily", instance, tags=RANGE).success
    job = code_location_job("sales_ingest")
    for key in keys[:-1]:
        bronze = job.execute_in_process(instance=instance, partition_key=key, asset_selection=[BRONZE_SALES])
        assert bronze.success
    assert run_job("sales_ingest", instance, partition_key=keys[-1]).success
    with server_connection("warehouse") as conn:
        return snapshot(conn)


# 21 runs on the workers (each sales run's dbt build a process of its own) and the reference's runs
# in process: minutes, far more when the two cores are shared; a hang is still caught.
@pytest.mark.timeout(2700)
def test_a_customer_backfill_and_a_sales_burst_on_two_celery_workers_equal_the_in_process_result(
    source, storage, instance, tmp_path, monkeypatch
):
    customer_sample.seed(source, rows=1_000, end_date=END, days=7)
    keys = upload_burst(storage)
    instance.add_dynamic_partitions(sales_blobs.name, keys)

    with cluster(tmp_path, monkeypatch, workers=2, wait=False) as (_broker, workers):
        # While the workers and the run processes start (each loads the code location), the same
        # loads in process on an instance of their own give the expected tables.
        with run_pool(4, warm=True) as pool:
            with monkeypatch.context() as in_process:
                in_process.setenv("DW_EXECUTOR", "in_process")
                reference = dg.DagsterInstance.ephemeral()
                reference.add_dynamic_partitions(sales_blobs.name, keys)
                expected = in_process_result(reference, keys)
            assert expected["bronze.customer_profile_raw"] and len(expected["bronze.sales"]) == BLOBS * 50
            fresh_warehouse()
            workers.wait_ready()
            # The backfill (one run of 7 days) and the burst as the run queue launches them: 4 runs
            # at a time (dagster.yaml's max_concurrent_runs), the backfill first.
            runs = run_jobs(
                [("customer_daily", None, RANGE), *(("sales_ingest", key, None) for key in keys)], pool=pool
            )
    assert all(success for _, success in runs), runs

    with server_connection("warehouse") as conn:
        assert snapshot(conn) == expected
    run_ids = [run_id for run_id, _ in runs]
    used = step_workers(instance, run_ids)
    assert len(used) == 1 + BLOBS, "every run's steps ran on Celery workers"
    assert len(set().union(*used.values())) == 2, used
    assert len(step_pids(instance, run_ids)) >= 2, "the steps ran in the workers' processes, not one"


def redis_children(*pids: int) -> list[psutil.Process]:
    """The redis-server processes started by the processes `pids`."""
    return [
        p for p in psutil.process_iter(["name", "ppid"]) if p.info["name"] == "redis-server" and p.info["ppid"] in pids
    ]


@pytest.mark.timeout(600)
def test_dw_workers_uses_the_running_embedded_redis_and_starts_a_worker_that_exits_again(server, tmp_path, monkeypatch):
    """`dw workers` beside another `dw` process (here this one) on the same state folder: one Redis,
    the first process's; a worker that dies is started again and the pool keeps serving."""
    monkeypatch.setenv("DW_HOME", str(tmp_path))
    monkeypatch.setenv("DW_EXECUTOR", "celery")
    monkeypatch.delenv("DW_REDIS_URL", raising=False)
    with embedded.services(env_file=None, needs=()):
        url = os.environ["DW_REDIS_URL"]
        (redis,) = redis_children(os.getpid())
        env = {k: v for k, v in os.environ.items() if k != "DW_REDIS_URL"}  # it must find the running one
        log_path = tmp_path / "dw_workers.log"
        with open(log_path, "wb") as log:
            dw = subprocess.Popen(
                [sys.executable, "-m", "dw_platform.cli", "workers", "1"],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: log_path.read_text().count(" ready.") == 1, 180, "the worker")
            assert redis_children(os.getpid(), dw.pid) == [redis], "one Redis: the running one"
            (worker,) = psutil.Process(dw.pid).children()
            assert worker.environ()["DW_REDIS_URL"] == url
            # Killed after MIN_UPTIME_S (sooner, dw workers takes the exit for a broken start and stops).
            time.sleep(max(0.0, MIN_UPTIME_S + 1 - (time.time() - worker.create_time())))
            worker.kill()
            wait_until(lambda: log_path.read_text().count(" ready.") == 2, 180, "the worker started again")
            assert f"(pid {worker.pid}) exited with code -9" in log_path.read_text()
            (again,) = psutil.Process(dw.pid).children()
            assert again.pid != worker.pid and dw.poll() is None
        finally:
            dw.terminate()  # SIGTERM: dw workers stops its worker and leaves the Redis it did not start
            assert dw.wait(timeout=120) == 0
        assert redis.is_running() and redis_children(os.getpid(), dw.pid) == [redis]
    assert not redis.is_running()  # stopped by the process that started it
