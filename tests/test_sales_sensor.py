"""The sales sensor against a real Azurite: one run per new or changed blob, never twice."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from dw_platform.defs.sales.partitions import sales_blobs
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
