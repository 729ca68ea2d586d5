"""The sales sensor against a real Azurite: one run per new or changed blob, never twice."""

import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest

from dw_platform.defs.sales.partitions import blob_path, partition_key, sales_blobs
from dw_platform.defs.sales.sensors import ETAG_TAG, sales_incoming_sensor, scan

CSV = b"order_id,order_date,product,region,quantity,unit_price\n1,2026-11-20,Widget,EU,2,3.50\n"


def tick(storage, instance, cursor=None, **scan_kwargs) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"sales_storage": storage})
    if scan_kwargs:
        return scan(context, storage, **scan_kwargs)
    return sales_incoming_sensor(context)


def requested(result: dg.SensorResult) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests}


def test_the_sensor_requests_one_run_per_new_blob_with_a_deterministic_run_key(storage):
    instance = dg.DagsterInstance.ephemeral()
    a = storage.upload("incoming/a.csv", CSV)
    b = storage.upload("incoming/day/b.csv", CSV)
    storage.upload("processed/old.csv", CSV)  # outside incoming/: ignored

    result = tick(storage, instance)

    assert requested(result) == {"a.csv": f"a.csv@{a.etag}", "day/b.csv": f"day/b.csv@{b.etag}"}
    assert {r.tags[ETAG_TAG] for r in result.run_requests} == {a.etag, b.etag}
    [add] = result.dynamic_partitions_requests
    assert add.partitions_def_name == sales_blobs.name and sorted(add.partition_keys) == ["a.csv", "day/b.csv"]
    assert json.loads(result.cursor) == {"launched": {"a.csv": a.etag, "day/b.csv": b.etag}}


def test_the_advanced_cursor_requests_nothing_again_until_a_blob_changes(storage):
    instance = dg.DagsterInstance.ephemeral()
    storage.upload("incoming/a.csv", CSV)
    storage.upload("incoming/b.csv", CSV)
    first = tick(storage, instance)
    instance.add_dynamic_partitions(sales_blobs.name, ["a.csv", "b.csv"])

    second = tick(storage, instance, first.cursor)
    assert second.run_requests == [] and second.cursor == first.cursor

    changed = storage.upload("incoming/b.csv", CSV + b"2,2026-11-20,Gadget,US,1,9.99\n")
    third = tick(storage, instance, second.cursor)
    assert requested(third) == {"b.csv": f"b.csv@{changed.etag}"}
    assert third.dynamic_partitions_requests == []  # the partition exists; only a new run
    assert requested(tick(storage, instance, third.cursor)) == {}


def test_the_cursor_forgets_blobs_that_left_incoming_so_it_stays_small(storage):
    instance = dg.DagsterInstance.ephemeral()
    a = storage.upload("incoming/a.csv", CSV)
    storage.upload("incoming/b.csv", CSV)
    first = tick(storage, instance)

    storage.move(a, "processed/a.csv")
    second = tick(storage, instance, first.cursor)

    assert second.run_requests == []
    assert list(json.loads(second.cursor)["launched"]) == ["b.csv"]


def test_thousands_of_blobs_are_requested_across_ticks_without_repeats(storage):
    instance = dg.DagsterInstance.ephemeral()
    names = [f"incoming/bulk/{i:05d}.csv" for i in range(2500)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda n: storage.upload(n, CSV), names))

    seen: list[str] = []
    cursor = None
    for _ in range(4):
        t0 = time.monotonic()
        result = tick(storage, instance, cursor, max_runs=1000)
        assert time.monotonic() - t0 < 30
        seen += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert len(seen) == len(set(seen)) == 2500
    assert sorted(seen) == [n.removeprefix("incoming/") for n in names]
    assert len(json.loads(cursor)["launched"]) == 2500


def past_run(instance, key: str, etag: str, status: dg.DagsterRunStatus, **tags) -> dg.DagsterRun:
    """A run of sales_ingest for one blob version as the sensor's request left it in the instance."""
    failed = status == dg.DagsterRunStatus.FAILURE
    run = dg.DagsterRun(
        job_name="sales_ingest",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED if failed else status,
        tags={"dagster/partition": key, ETAG_TAG: etag, **tags},
    )
    instance.add_run(run)
    if failed:
        instance.report_run_failed(run)  # as run monitoring does for a run whose process died
    return run


def test_a_blob_whose_run_failed_or_died_is_requested_again_with_a_new_run_key(storage):
    instance = dg.DagsterInstance.ephemeral()
    a = storage.upload("incoming/a.csv", CSV)
    first = tick(storage, instance)
    past_run(instance, "a.csv", a.etag, dg.DagsterRunStatus.FAILURE)

    second = tick(storage, instance, first.cursor, retry_after_s=0)

    assert requested(second) == {"a.csv": f"a.csv@{a.etag}#2"}
    assert second.run_requests[0].tags[ETAG_TAG] == a.etag
    assert second.cursor == first.cursor and second.dynamic_partitions_requests == []
    past_run(instance, "a.csv", a.etag, dg.DagsterRunStatus.FAILURE)
    assert requested(tick(storage, instance, second.cursor, retry_after_s=0)) == {"a.csv": f"a.csv@{a.etag}#3"}


def test_a_blob_is_not_requested_again_while_its_run_is_going_or_will_be_retried_or_too_soon(storage):
    instance = dg.DagsterInstance.ephemeral()
    a = storage.upload("incoming/a.csv", CSV)
    b = storage.upload("incoming/b.csv", CSV)
    c = storage.upload("incoming/c.csv", CSV)
    first = tick(storage, instance)
    past_run(instance, "a.csv", a.etag, dg.DagsterRunStatus.STARTED)
    past_run(instance, "b.csv", b.etag, dg.DagsterRunStatus.FAILURE, **{"dagster/will_retry": "true"})
    past_run(instance, "c.csv", c.etag, dg.DagsterRunStatus.FAILURE)

    assert requested(tick(storage, instance, first.cursor, retry_after_s=0)) == {"c.csv": f"c.csv@{c.etag}#2"}
    assert requested(tick(storage, instance, first.cursor, retry_after_s=3600)) == {}


def test_a_blob_that_left_incoming_after_the_listing_is_not_requested_again(storage):
    instance = dg.DagsterInstance.ephemeral()
    a = storage.upload("incoming/a.csv", CSV)
    first = tick(storage, instance)
    past_run(instance, "a.csv", a.etag, dg.DagsterRunStatus.FAILURE)
    storage.move(a, "failed/a.csv")

    second = tick(storage, instance, first.cursor, retry_after_s=0)

    assert second.run_requests == [] and json.loads(second.cursor) == {"launched": {}}


def test_every_blob_name_becomes_a_partition_key_and_folder_markers_are_left_alone(storage):
    instance = dg.DagsterInstance.ephemeral()
    odd = ["a...b.csv", "tab\there.csv", "100%.csv", "x....csv"]
    for name in odd:
        storage.upload("incoming/" + name, CSV)
    storage.upload("incoming/", b"")
    storage.upload("incoming/day/", b"")

    result = tick(storage, instance)

    keys = sorted(r.partition_key for r in result.run_requests)
    assert keys == sorted(["a%2E%2E%2Eb.csv", "tab%09here.csv", "100%25.csv", "x%2E%2E%2E%2Ecsv"])
    assert sorted(blob_path(k) for k in keys) == sorted(odd)
    instance.add_dynamic_partitions(sales_blobs.name, keys)  # Dagster accepts them
    assert requested(tick(storage, instance, result.cursor)) == {}


@pytest.mark.parametrize("path", ["plain/name.csv", "a..b.csv", "%41", "...", "\x7f.csv", "é…/ü.csv"])
def test_partition_keys_decode_back_to_the_blob_path(path):
    key = partition_key(path)
    assert blob_path(key) == path
    assert "..." not in key and not any(ord(c) < 32 or ord(c) == 127 for c in key)


def test_an_idle_tick_logs_nothing(storage, caplog):
    instance = dg.DagsterInstance.ephemeral()
    a = storage.upload("incoming/a.csv", CSV)
    first = tick(storage, instance)
    past_run(instance, "a.csv", a.etag, dg.DagsterRunStatus.STARTED)
    context = dg.build_sensor_context(instance=instance, cursor=first.cursor, resources={"sales_storage": storage})
    sensor_lines: list[str] = []
    context.log.addHandler(Collect(sensor_lines))

    with caplog.at_level(logging.INFO):  # the storage SDK's own loggers included
        second = sales_incoming_sensor(context)

    assert second.run_requests == [] and second.cursor == first.cursor
    assert sensor_lines == [] and [f"{r.name}: {r.getMessage()}" for r in caplog.records] == []
    storage.upload("incoming/b.csv", CSV)
    sales_incoming_sensor(context)
    assert sensor_lines == ["1 blob version(s) to ingest, 1 new partition(s)"]  # the test can see a line


class Collect(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_incoming_check_fails_for_blobs_waiting_longer_than_the_threshold(storage, monkeypatch):
    from dw_platform.defs.sales.checks import sales_incoming_not_stale

    storage.upload("incoming/a.csv", CSV)
    storage.upload("incoming/day/", b"")  # a folder marker does not wait for anything
    storage.upload("processed/b.csv", CSV)

    monkeypatch.setenv("DW_SALES_MAX_WAIT_MINUTES", "60")
    fresh = sales_incoming_not_stale(sales_storage=storage)
    monkeypatch.setenv("DW_SALES_MAX_WAIT_MINUTES", "0")
    late = sales_incoming_not_stale(sales_storage=storage)

    assert fresh.passed and fresh.metadata["files_waiting"].value == 1
    assert not late.passed and late.metadata["files_waiting_too_long"].value == 1
    assert late.metadata["longest_waiting"].value.startswith("incoming/a.csv (")
