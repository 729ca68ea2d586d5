"""Video faults on the real servers: a storage outage during a day's load is retried and the day
loads once; the sensor asks for a day's version once however often its tick is replayed."""

import threading
from datetime import date

import dagster as dg
from faultkit import copying_backend, fast_retry_job, session_resources, wait_until

from dw_platform.defs.video.assets import video_viewing_sessions
from dw_platform.defs.video.sensors import scan
from dw_platform.devenv import embedded
from dw_platform.lib.landing import LandingZone
from dw_platform.samples import video as sample

DAY = "2026-11-20"


def test_a_storage_outage_mid_load_of_a_video_file_is_retried_and_the_day_loads_once(
    azurite, warehouse, databases, instance
):
    zone = LandingZone(container="video", **azurite.settings())
    sessions = sample.sessions(date.fromisoformat(DAY), count=40_000)
    zone.landing().put(f"{DAY}/viewing_sessions.csv", sample.to_csv(sample.SESSIONS_HEADER, sessions))
    azurite.settle()
    job = fast_retry_job(
        "video_daily",
        [video_viewing_sessions],
        {"warehouse": session_resources()["warehouse"], "video_landing": zone},
        max_retries=3,
        delay=2,
    )

    def outage():
        with embedded.admin_connection("postgres") as admin:
            copying_backend(admin, databases["warehouse"])
        azurite.crash()
        wait_until(lambda: statuses(warehouse) == ["failed"], what="the failed attempt")
        azurite.start()

    fault = threading.Thread(target=outage)
    fault.start()
    result = job.execute_in_process(instance=instance, partition_key=DAY, raise_on_error=False)
    fault.join()

    assert result.success
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert warehouse.execute(
        "select count(*), count(distinct session_id) from bronze.video_viewing_sessions"
    ).fetchone() == (40_000, 40_000)
    assert statuses(warehouse) == ["failed", "succeeded"]
    [(error,)] = warehouse.execute("select error from bronze.batch_ledger where status = 'failed'").fetchall()
    assert f"blob storage unavailable while reading {DAY}/viewing_sessions.csv" in error


def test_the_video_sensor_requests_a_day_once_however_often_its_tick_is_replayed(azurite, instance):
    zone = LandingZone(container="video", **azurite.settings()).landing()
    for name, data in sample.sample_files(date.fromisoformat(DAY)).items():
        zone.put(f"{DAY}/{name}", data)

    # The daemon died after evaluating the tick but before storing its cursor: it evaluates again.
    ticks = [scan(dg.build_sensor_context(instance=instance), zone) for _ in range(3)]

    assert len({r.run_key for t in ticks for r in t.run_requests}) == 1
    assert scan(dg.build_sensor_context(instance=instance, cursor=ticks[-1].cursor), zone).run_requests == []


def statuses(warehouse) -> list[str]:
    return [s for (s,) in warehouse.execute("select status from bronze.batch_ledger order by started_at")]
