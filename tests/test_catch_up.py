"""The catch-up schedules on a Dagster instance holding the partitions' history: a tick after the
platform was down for days asks for ONE run over every day missed or failed, and for nothing when
every day is built. Days are built by reporting materializations; failures by real runs of the
bronze assets against resources that cannot be reached."""

from datetime import datetime, timezone

import dagster as dg
import pytest

from dw_platform.defs.customer.assets import customer_profile_raw
from dw_platform.defs.video.assets import video_users
from dw_platform.lib.catch_up import CATCH_UP_TAG, RANGE_END_TAG, RANGE_START_TAG
from dw_platform.lib.landing import LandingZone
from dw_platform.lib.odbc import OdbcSource
from dw_platform.lib.warehouse import PostgresWarehouse

CUSTOMER = [dg.AssetKey(["bronze", "customer_profile_raw"]), dg.AssetKey(["silver", "customer_profile_standardized"])]
VIDEO = [dg.AssetKey(["bronze", n]) for n in ("video_users", "video_viewing_sessions", "content")]
UNREACHABLE = PostgresWarehouse(host="/nonexistent", user="dw", password="x", database="warehouse")


def days(first: int, last: int) -> list[str]:
    return [f"2025-01-{d:02d}" for d in range(first, last + 1)]


def build(instance: dg.DagsterInstance, assets, partitions) -> None:
    for partition in partitions:
        for key in assets:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def tick(definitions: dg.Definitions, name: str, instance: dg.DagsterInstance, at: datetime):
    schedule = definitions.resolve_schedule_def(name)
    return schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=at))


@pytest.fixture
def instance():
    """A persistent instance of the test's own (schedule contexts load it from its reference)."""
    with dg.instance_for_test() as instance:
        yield instance


def test_after_three_days_down_one_tick_requests_one_run_for_every_day_missed_or_failed(definitions, instance):
    build(instance, CUSTOMER, days(1, 8))  # built every night up to the 8th; then the platform was down
    failed = dg.materialize(  # and a re-run of the 5th failed
        [customer_profile_raw],
        partition_key="2025-01-05",
        instance=instance,
        resources={"warehouse": UNREACHABLE, "customer_source": OdbcSource(connection_string="x", name="crm")},
        raise_on_error=False,
    )
    assert not failed.success

    request = tick(definitions, "customer_daily_schedule", instance, datetime(2025, 1, 12, 2, tzinfo=timezone.utc))

    assert isinstance(request, dg.RunRequest)
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2025-01-05", "2025-01-11")
    assert request.tags[CATCH_UP_TAG] == "2025-01-05, 2025-01-09, 2025-01-10, 2025-01-11"
    assert request.partition_key is None  # one range run, not a run per day

    build(instance, CUSTOMER, ["2025-01-05", *days(9, 11)])  # what that run builds
    assert isinstance(
        tick(definitions, "customer_daily_schedule", instance, datetime(2025, 1, 12, 2, tzinfo=timezone.utc)),
        dg.SkipReason,
    )
    # The next night asks for the one new day only.
    request = tick(definitions, "customer_daily_schedule", instance, datetime(2025, 1, 13, 2, tzinfo=timezone.utc))
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2025-01-12", "2025-01-12")


def test_a_day_with_silver_failed_is_built_again_though_its_bronze_is_there(definitions, instance):
    build(instance, CUSTOMER[:1], days(1, 3))
    build(instance, CUSTOMER[1:], days(1, 2))

    request = tick(definitions, "customer_daily_schedule", instance, datetime(2025, 1, 4, 2, tzinfo=timezone.utc))

    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2025-01-03", "2025-01-03")


def test_the_video_schedule_catches_up_days_whose_files_failed_or_were_never_loaded(definitions, instance, tmp_path):
    build(instance, VIDEO, days(1, 6))
    failed = dg.materialize(  # the 2nd's users file went missing and its re-run failed
        [video_users],
        partition_key="2025-01-02",
        instance=instance,
        resources={"warehouse": UNREACHABLE, "video_landing": LandingZone(local_folder=str(tmp_path))},
        raise_on_error=False,
    )
    assert not failed.success

    request = tick(definitions, "video_daily_schedule", instance, datetime(2025, 1, 10, 3, tzinfo=timezone.utc))

    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2025-01-02", "2025-01-09")
    assert request.tags[CATCH_UP_TAG] == "2025-01-02, 2025-01-07, 2025-01-08, 2025-01-09"
    build(instance, VIDEO, ["2025-01-02", *days(7, 9)])
    assert isinstance(
        tick(definitions, "video_daily_schedule", instance, datetime(2025, 1, 10, 3, tzinfo=timezone.utc)),
        dg.SkipReason,
    )
