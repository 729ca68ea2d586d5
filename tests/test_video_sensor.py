"""The video landing sensor, on a local folder and on a real Azurite container: one run per
arrival day once its three files are there, again when one changes, never twice for a version."""

import json
import os
import uuid
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from dw_platform.defs.video.sensors import VERSION_TAG, scan
from dw_platform.lib.blob import BlobStorage
from dw_platform.lib.landing import BlobLanding, LocalLanding

DAY1, DAY2 = "2026-11-20", "2026-11-21"
NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)


@pytest.fixture(params=["folder", "blob"])
def zone(request, tmp_path, server):
    if request.param == "folder":
        yield LocalLanding(tmp_path / "landing")
        return
    storage = BlobStorage(
        container=f"video-{uuid.uuid4().hex[:12]}", connection_string=os.environ["DW_BLOB_CONNECTION_STRING"]
    )
    storage.ensure_container()
    yield BlobLanding(storage)
    storage.service_client().delete_container(storage.container)


def land_day(zone, day: str, files=("users.csv", "viewing_sessions.csv", "content.json"), data: bytes = b"x") -> None:
    for name in files:
        zone.put(f"{day}/{name}", data)


def tick(zone, cursor=None, now=NOW, instance=None) -> dg.SensorResult:
    return scan(
        dg.build_sensor_context(cursor=cursor, instance=instance or dg.DagsterInstance.ephemeral()), zone, now=now
    )


def requested(result: dg.SensorResult) -> list[str]:
    return [r.partition_key for r in result.run_requests]


def test_a_day_is_requested_once_all_three_files_have_landed(zone):
    land_day(zone, DAY1, files=("users.csv", "viewing_sessions.csv"))
    zone.put("notes/readme.txt", b"not a day")

    waiting = tick(zone)
    assert waiting.run_requests == [] and json.loads(waiting.cursor) == {"requested": {}}

    land_day(zone, DAY1, files=("content.json",))
    arrived = tick(zone, waiting.cursor)

    [request] = arrived.run_requests
    version = request.tags[VERSION_TAG]
    assert (request.partition_key, request.run_key) == (DAY1, f"{DAY1}@{version}")
    assert json.loads(arrived.cursor) == {"requested": {DAY1: version}}


def test_a_replayed_tick_asks_for_the_same_run_keys_and_the_next_tick_for_nothing(zone):
    land_day(zone, DAY1)
    land_day(zone, DAY2)

    first, replay = tick(zone), tick(zone)
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in replay.run_requests]
    assert requested(first) == [DAY1, DAY2]

    second = tick(zone, first.cursor)
    assert second.run_requests == [] and second.cursor == first.cursor


def test_a_changed_file_requests_its_day_again_with_a_new_run_key(zone):
    land_day(zone, DAY1)
    first = tick(zone)
    zone.put(f"{DAY1}/users.csv", b"corrected")

    second = tick(zone, first.cursor)

    [request] = second.run_requests
    assert request.partition_key == DAY1 and request.run_key != first.run_requests[0].run_key


def test_a_day_that_has_not_ended_is_not_requested_yet(zone):
    today = NOW.date().isoformat()
    land_day(zone, today)

    assert tick(zone).run_requests == []
    assert requested(tick(zone, now=NOW + timedelta(days=1))) == [today]


def test_a_day_whose_files_were_removed_leaves_the_cursor(zone):
    land_day(zone, DAY1)
    first = tick(zone)
    if isinstance(zone, LocalLanding):
        for path in (zone.root / DAY1).iterdir():
            path.unlink()
    else:
        for name in ("users.csv", "viewing_sessions.csv", "content.json"):
            zone.storage.delete(f"{DAY1}/{name}")

    assert json.loads(tick(zone, first.cursor).cursor) == {"requested": {}}


def test_compressed_files_count_for_their_day_and_files_in_failed_do_not(zone):
    land_day(zone, DAY1, files=("users.csv.gz", "viewing_sessions.csv", "content.json.zst"))
    land_day(zone, DAY2, files=("viewing_sessions.csv", "content.json"))
    zone.put(f"failed/{DAY2}/users.csv", b"x")

    assert requested(tick(zone)) == [DAY1]


def test_a_day_whose_run_ended_without_loading_it_is_requested_again(zone):
    instance = dg.DagsterInstance.ephemeral()
    land_day(zone, DAY1)
    first = tick(zone, instance=instance)
    [request] = first.run_requests
    run = dg.DagsterRun(
        job_name="video_daily",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={**request.tags, "dagster/partition": DAY1},
    )
    instance.add_run(run)
    instance.report_run_failed(run)  # an outage outlasted its retries, or its process was killed

    again = scan(dg.build_sensor_context(cursor=first.cursor, instance=instance), zone, now=NOW, retry_after_s=0)

    assert [r.run_key for r in again.run_requests] == [f"{request.run_key}#2"]
    zone.put(f"{DAY1}/users.csv", b"corrected")  # a new version: requested as such, not as a retry
    assert [r.run_key for r in tick(zone, again.cursor, instance=instance).run_requests] != [f"{request.run_key}#2"]


def test_the_code_locations_sensor_watches_the_configured_landing_zone(tmp_path, server, monkeypatch):
    from dw_platform.definitions import defs

    folder = tmp_path / "landing"
    monkeypatch.setenv("DW_VIDEO_LANDING_DIR", str(folder))
    land_day(LocalLanding(folder), DAY1)
    definitions = defs()
    sensor = definitions.resolve_sensor_def("video_landing_sensor")

    result = sensor(dg.build_sensor_context(resources={"video_landing": definitions.resources["video_landing"]}))

    assert sensor.job_name == "video_daily" and requested(result) == [DAY1]
