"""Sales faults on the real servers: no blob is stranded in incoming/ or misfiled in failed/.

Each test injects the fault (a run's process or Azurite killed by its pid, a misfiled blob) and
then checks what an operator would: every row of the blob in bronze exactly once, the run ended,
the blob in the right folder with one current report, the ledger entries.
"""

import json
import os
import signal
import threading
from datetime import date

import dagster as dg
from faultkit import copying_backend, fast_retry_job, session_resources, start_child_run, wait_until

from dw_platform.defs.sales.assets import sales
from dw_platform.defs.sales.partitions import sales_blobs
from dw_platform.defs.sales.sensors import scan
from dw_platform.devenv import embedded
from dw_platform.lib.crypto import FernetKeys
from dw_platform.samples import sales as sample

DAY = date(2026, 11, 20)


def names(storage) -> list[str]:
    return sorted(b.name for b in storage.list(""))


def report(storage, name: str) -> dict:
    return json.loads(b"".join(storage.chunks(storage.version(name))))


def tick(storage, instance, cursor=None) -> dg.SensorResult:
    """One evaluation of the sales sensor, as the daemon's (the dynamic partitions it adds, added)."""
    result = scan(dg.build_sensor_context(instance=instance, cursor=cursor), storage, retry_after_s=0)
    for add in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(sales_blobs.name, list(add.partition_keys))
    return result


def rows_in_bronze(warehouse) -> tuple[int, int]:
    return warehouse.execute("select count(*), count(distinct source_line) from bronze.sales").fetchone()


def ledger(warehouse) -> list[tuple]:
    return warehouse.execute(
        "select status, rows_loaded, coalesce(error, '') from bronze.batch_ledger order by started_at"
    ).fetchall()


def sales_job(storage, max_retries: int):
    resources = {
        "warehouse": session_resources()["warehouse"],
        "sales_storage": storage,
        "sales_keys": FernetKeys(fernet_keys=os.environ["DW_SALES_FERNET_KEYS"]),
    }
    return fast_retry_job("sales_ingest", [sales], resources, max_retries=max_retries, delay=2)


def test_a_sales_run_killed_mid_load_is_requested_again_and_loads_its_blob_exactly_once(
    storage, warehouse, databases, instance
):
    from dw_platform.definitions import defs  # after the storage fixture named the container

    rows = 60_000
    storage.upload("incoming/big.csv", sample.to_csv(sample.HEADER, list(sample.rows(rows, DAY))))
    first = tick(storage, instance)
    [request] = first.run_requests
    child = start_child_run("sales_ingest", request.partition_key, request.tags)
    with embedded.admin_connection("postgres") as admin:
        copying_backend(admin, databases["warehouse"])
    assert child.poll() is None, "the run ended before it could be killed"

    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    assert names(storage) == ["incoming/big.csv"]  # stranded: its run died before moving it
    [killed] = instance.get_runs(dg.RunsFilter(job_name="sales_ingest", tags=request.tags))
    assert killed.status == dg.DagsterRunStatus.STARTED
    assert tick(storage, instance, first.cursor).run_requests == []  # still "running": not requested twice
    # The code server (or run monitoring) marks a run failed when its process is gone; the
    # instance's run retries (dagster.yaml) will run it again, so the sensor leaves it to them.
    instance.report_run_failed(killed)
    assert instance.get_run_by_id(killed.run_id).tags["dagster/will_retry"] == "true"
    assert tick(storage, instance, first.cursor).run_requests == []
    # Once the run retries are spent the daemon records that it will not retry (no daemon here).
    instance.add_run_tags(killed.run_id, {"dagster/will_retry": "false"})

    again = tick(storage, instance, first.cursor)

    [retry] = again.run_requests
    assert retry.run_key == f"{request.run_key}#2" and retry.partition_key == "big.csv"
    result = (
        defs()
        .resolve_job_def("sales_ingest")
        .execute_in_process(instance=instance, partition_key=retry.partition_key, tags=retry.tags, raise_on_error=False)
    )
    assert result.success
    assert rows_in_bronze(warehouse) == (rows, rows)
    assert names(storage) == ["processed/big.csv", "processed/big.csv.report.json"]
    assert report(storage, "processed/big.csv.report.json")["rows_loaded"] == rows
    # The killed attempt's entry stayed `running` (nothing could close it) until this load found
    # its session gone and closed it as abandoned.
    assert [(s, n) for s, n, _ in ledger(warehouse)] == [("abandoned", 0), ("succeeded", rows)]
    assert tick(storage, instance, again.cursor).run_requests == []


def test_a_storage_outage_mid_load_is_retried_and_the_file_loads_once(azurite, warehouse, databases, instance):
    storage = azurite.storage("sales")
    rows = 20_000
    storage.upload("incoming/orders.csv", sample.to_csv(sample.HEADER, list(sample.rows(rows, DAY))))
    azurite.settle()
    instance.add_dynamic_partitions(sales_blobs.name, ["orders.csv"])

    def outage():
        with embedded.admin_connection("postgres") as admin:
            copying_backend(admin, databases["warehouse"])
        azurite.crash()
        wait_until(lambda: any(s == "failed" for s, _, _ in ledger(warehouse)), what="the failed attempt")
        azurite.start()

    fault = threading.Thread(target=outage)
    fault.start()
    result = sales_job(storage, max_retries=3).execute_in_process(
        instance=instance, partition_key="orders.csv", raise_on_error=False
    )
    fault.join()

    assert result.success
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert rows_in_bronze(warehouse) == (rows, rows)
    assert names(storage) == ["processed/orders.csv", "processed/orders.csv.report.json"]
    [(failed, _, error), (succeeded, loaded, _)] = ledger(warehouse)
    assert (failed, succeeded, loaded) == ("failed", "succeeded", rows)
    assert "blob storage unavailable while reading incoming/orders.csv" in error


def test_a_storage_outage_longer_than_the_retries_leaves_the_file_in_incoming_for_the_next_request(
    azurite, warehouse, databases, instance
):
    storage = azurite.storage("sales")
    rows = 20_000
    storage.upload("incoming/orders.csv", sample.to_csv(sample.HEADER, list(sample.rows(rows, DAY))))
    azurite.settle()
    first = tick(storage, instance)
    [request] = first.run_requests
    job = sales_job(storage, max_retries=1)

    def outage():
        with embedded.admin_connection("postgres") as admin:
            copying_backend(admin, databases["warehouse"])
        azurite.crash()

    fault = threading.Thread(target=outage)
    fault.start()
    down = job.execute_in_process(
        instance=instance, partition_key="orders.csv", tags=request.tags, raise_on_error=False
    )
    fault.join()

    assert not down.success  # the load failed mid-read, its retry found storage gone from the start
    [failure] = down.get_step_failure_events()
    assert "blob storage unavailable while reading the properties of incoming/orders.csv" in str(
        failure.step_failure_data.error
    )
    [(status, _, error)] = ledger(warehouse)
    assert status == "failed" and "blob storage unavailable while reading incoming/orders.csv" in error
    assert rows_in_bronze(warehouse) == (0, 0)

    azurite.start()
    assert names(storage) == ["incoming/orders.csv"]  # not misfiled in failed/: the file is fine
    [retry] = tick(storage, instance, first.cursor).run_requests
    assert retry.run_key == f"{request.run_key}#2"
    assert job.execute_in_process(instance=instance, partition_key="orders.csv", tags=retry.tags).success
    assert rows_in_bronze(warehouse) == (rows, rows)
    assert names(storage) == ["processed/orders.csv", "processed/orders.csv.report.json"]
    assert [s for s, _, _ in ledger(warehouse)] == ["failed", "succeeded"]


def ingest(storage, instance, key: str) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions(sales_blobs.name, [key])
    return sales_job(storage, max_retries=0).execute_in_process(
        instance=instance, partition_key=key, raise_on_error=False
    )


GOOD = sample.to_csv(sample.HEADER, list(sample.rows(30, DAY)))
BAD = b"sku;warehouse;on_hand\r\nA-1;Berlin;12\r\n"


def test_a_file_misfiled_in_failed_loads_on_a_re_run_and_takes_its_one_report_to_processed(
    storage, warehouse, instance
):
    storage.upload("failed/orders.csv", GOOD)  # as a storage outage used to leave a good file
    storage.upload_json("failed/orders.csv.report.json", {"status": "failed", "error": "storage unavailable"})

    assert ingest(storage, instance, "orders.csv").success

    assert names(storage) == ["processed/orders.csv", "processed/orders.csv.report.json"]
    assert report(storage, "processed/orders.csv.report.json")["status"] == "succeeded"
    assert rows_in_bronze(warehouse) == (30, 30)


def test_a_new_upload_that_loads_supersedes_the_version_that_failed(storage, warehouse, instance):
    storage.upload("incoming/orders.csv", BAD)
    assert not ingest(storage, instance, "orders.csv").success
    assert names(storage) == ["failed/orders.csv", "failed/orders.csv.report.json"]

    storage.upload("incoming/orders.csv", GOOD)
    assert ingest(storage, instance, "orders.csv").success

    assert names(storage) == ["processed/orders.csv", "processed/orders.csv.report.json"]
    assert [s for s, _, _ in ledger(warehouse)] == ["failed", "succeeded"]


def test_a_new_version_that_fails_keeps_the_processed_one_whose_rows_bronze_holds(storage, warehouse, instance):
    v1 = storage.upload("incoming/orders.csv", GOOD)
    assert ingest(storage, instance, "orders.csv").success
    v2 = storage.upload("incoming/orders.csv", BAD)

    assert not ingest(storage, instance, "orders.csv").success
    assert names(storage) == [
        "failed/orders.csv",
        "failed/orders.csv.report.json",
        "processed/orders.csv",
        "processed/orders.csv.report.json",
    ]
    assert report(storage, "failed/orders.csv.report.json")["etag"] == v2.etag
    assert report(storage, "processed/orders.csv.report.json")["etag"] == v1.etag
    assert rows_in_bronze(warehouse) == (30, 30)  # the failed load committed nothing

    assert not ingest(storage, instance, "orders.csv").success  # a re-run takes the newer, failed version
    assert "lacks required column" in report(storage, "failed/orders.csv.report.json")["error"]


def test_blob_names_dagster_refuses_as_partition_keys_still_end_in_processed_or_failed_with_one_report(
    storage, warehouse, instance
):
    storage.upload("incoming/sales...final.csv", GOOD)
    storage.upload("incoming/inventory\t1.csv", BAD)
    storage.upload("incoming/day/", b"")  # a folder marker, not a file
    requests = {r.partition_key: r for r in tick(storage, instance).run_requests}
    assert sorted(requests) == ["inventory%091.csv", "sales%2E%2E%2Efinal.csv"]

    runs = {
        key: sales_job(storage, max_retries=0).execute_in_process(
            instance=instance, partition_key=key, tags=r.tags, raise_on_error=False
        )
        for key, r in requests.items()
    }

    assert runs["sales%2E%2E%2Efinal.csv"].success and not runs["inventory%091.csv"].success  # a failed run: alerted
    assert names(storage) == [
        "failed/inventory\t1.csv",
        "failed/inventory\t1.csv.report.json",
        "incoming/day/",
        "processed/sales...final.csv",
        "processed/sales...final.csv.report.json",
    ]
    assert warehouse.execute("select distinct _bronze_source_file from bronze.sales").fetchall() == [
        ("incoming/sales...final.csv",)
    ]
    assert rows_in_bronze(warehouse) == (30, 30)
