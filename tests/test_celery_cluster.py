"""Every job's steps on Celery workers over a real Redis (DW_EXECUTOR=celery, the workers `dw workers`
starts): a 7-day customer backfill and a burst of 20 sales blobs on 2 workers build the same
bronze, silver and gold as in process, and both workers take steps."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest
from clusterkit import cluster, snapshot, step_workers

from dw_platform.defs.sales.partitions import INCOMING, sales_blobs
from dw_platform.devenv import embedded
from dw_platform.devenv.runs import code_location_job, run_job, run_jobs
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


def fresh_warehouse() -> None:
    with embedded.admin_connection("postgres") as conn:
        conn.execute('drop database if exists "warehouse" with (force)')
        conn.execute(f'create database "warehouse" owner {embedded.PIPELINE_ROLE}')


def upload_burst(storage) -> list[str]:
    keys = [f"burst/orders_{i:02d}.csv" for i in range(BLOBS)]
    for i, key in enumerate(keys):
        rows = list(sales_sample.rows(50, date(2026, 11, 10 + i % 7), seed=100 + i, first_id=1 + 1000 * i))
        storage.upload(INCOMING + key, sales_sample.to_csv(sales_sample.HEADER, rows))
    return keys


def in_process_result(storage) -> dict:
    """The same loads in process. Silver and gold of sales are rebuilt whole by every run, so one
    full run after the other blobs' bronze gives the tables twenty full runs give."""
    instance = dg.DagsterInstance.ephemeral()
    assert run_job("customer_daily", instance, tags=RANGE).success
    keys = upload_burst(storage)
    instance.add_dynamic_partitions(sales_blobs.name, keys)
    job = code_location_job("sales_ingest")
    for key in keys[:-1]:
        bronze = job.execute_in_process(instance=instance, partition_key=key, asset_selection=[BRONZE_SALES])
        assert bronze.success
    assert run_job("sales_ingest", instance, partition_key=keys[-1]).success
    with server_connection("warehouse") as conn:
        return snapshot(conn)


# About 5 minutes on a quiet machine (41 runs, each dbt build a process of its own); far more when
# the two cores are shared: a hang is still caught.
@pytest.mark.timeout(2700)
def test_a_customer_backfill_and_a_sales_burst_on_two_celery_workers_equal_the_in_process_result(
    source, storage, instance, tmp_path, monkeypatch
):
    customer_sample.seed(source, rows=1_000, end_date=END, days=7)
    expected = in_process_result(storage)
    assert expected["bronze.customer_profile_raw"] and len(expected["bronze.sales"]) == BLOBS * 50
    fresh_warehouse()

    with cluster(tmp_path, monkeypatch, workers=2) as (_broker, workers):
        backfill = run_job("customer_daily", instance, tags=RANGE)
        assert backfill.success
        keys = upload_burst(storage)
        instance.add_dynamic_partitions(sales_blobs.name, keys)
        # the burst as the run queue launches it: 4 runs at a time (dagster.yaml's max_concurrent_runs)
        burst = run_jobs([("sales_ingest", key, None) for key in keys], processes=4)
        assert all(success for _, success in burst), burst

    with server_connection("warehouse") as conn:
        assert snapshot(conn) == expected
    used = step_workers(instance, [backfill.run_id, *(run_id for run_id, _ in burst)])
    assert len(used) == 1 + BLOBS, "every run's steps ran on Celery workers"
    assert len(set().union(*used.values())) == 2, used
