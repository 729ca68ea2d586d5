"""Silver and gold follow their upstream without a second click (declarative automation), and
runs execute in their own process, step after step (the in-process executor)."""

import json
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from dw_platform.samples import customer as customer_sample

BRONZE = dg.AssetKey(["bronze", "customer_profile_raw"])
SILVER = dg.AssetKey(["silver", "customer_profile_standardized"])
GOLD = [
    dg.AssetKey(["gold", name])
    for name in ("dim_customer_profile", "fact_customer_profile_audit", "bridge_customer_contact_channel")
]
SEEDS = [
    dg.AssetKey(["silver", name]) for name in ("customer_country_aliases", "customer_country_dial_codes")
]  # silver reads them


def requested(result) -> dict[str, set]:
    return {
        r.key.to_user_string(): set(result.get_requested_partitions(r.key))
        for r in result.results
        if r.true_subset.size
    }


def materialized(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def test_a_fresh_bronze_partition_leads_to_its_silver_partition_then_to_gold(definitions):
    instance = dg.DagsterInstance.ephemeral()
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
    assert tick.total_requested == 0  # nothing upstream holds data yet
    for key in (*SEEDS, BRONZE, SILVER, *GOLD):  # a day built earlier, with the seeds
        materialized(instance, key, "2026-11-09" if key in (BRONZE, SILVER) else None)
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    assert tick.total_requested == 0

    materialized(instance, BRONZE, "2026-11-10")  # an old day, not only the latest partition
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    assert requested(tick) == {SILVER.to_user_string(): {"2026-11-10"}}

    materialized(instance, SILVER, "2026-11-10")
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    assert set(requested(tick)) == {key.to_user_string() for key in GOLD}

    for key in GOLD:
        materialized(instance, key)
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    assert tick.total_requested == 0  # settled: nothing is rebuilt twice


def test_a_domain_job_that_built_silver_and_gold_itself_triggers_nothing_more(definitions):
    instance = dg.DagsterInstance.ephemeral()
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
    # What customer_daily does for a day: the seeds, bronze, silver and gold between two ticks.
    for key in (*SEEDS, BRONZE, SILVER, *GOLD):
        materialized(instance, key, "2026-11-10" if key in (BRONZE, SILVER) else None)
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    assert SILVER.to_user_string() not in requested(tick)


def test_the_automation_sensor_runs_by_default_and_runs_execute_in_process(definitions):
    sensor = definitions.resolve_sensor_def("automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    for job in ("customer_daily", "sales_ingest", "video_daily"):
        assert definitions.resolve_job_def(job).executor_def.name == "in_process"
    graph = definitions.resolve_asset_graph()
    for key in (SILVER, *GOLD):
        assert graph.get(key).automation_condition is not None, key
    assert graph.get(BRONZE).automation_condition is None  # bronze is loaded by jobs, sensors and people


def test_a_rebuilt_seed_does_not_make_other_days_stale(definitions):
    instance = dg.DagsterInstance.ephemeral()
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
    for key in (*SEEDS, BRONZE, SILVER, *GOLD):  # two days built earlier
        for day in ("2026-11-09", "2026-11-10") if key in (BRONZE, SILVER) else (None,):
            materialized(instance, key, day)
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    # A later run of one day rebuilds the seeds with it, as every domain job does.
    for key in (*SEEDS, BRONZE, SILVER, *GOLD):
        materialized(instance, key, "2026-11-10" if key in (BRONZE, SILVER) else None)
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    assert tick.total_requested == 0, requested(tick)  # not 2026-11-09's silver, nor gold after it


def test_a_video_range_run_that_built_its_days_silver_and_gold_triggers_nothing_more(definitions):
    """video_daily over a range of days, as a catch-up tick runs it: its silver is partitioned like
    its bronze, its gold is not. What the run materializes (the seeds, every day's bronze and silver,
    the gold tables) between two evaluations asks for nothing more, nor for the day built earlier."""
    instance = dg.DagsterInstance.ephemeral()
    graph = definitions.resolve_asset_graph()
    video = sorted(
        (k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "video"),
        key=lambda k: ("bronze", "silver", "gold").index(k.path[0]),
    )
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
    for days in (["2026-11-16"], ["2026-11-13", "2026-11-14", "2026-11-15"]):  # a day built earlier, then the range
        for key in video:
            for day in days if graph.get(key).partitions_def else [None]:
                materialized(instance, key, day)
        tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
        assert tick.total_requested == 0, requested(tick)


RANGE_END = date(2026, 11, 17)  # the source's days: 2026-11-09 .. 2026-11-16


def test_the_automation_launches_nothing_a_running_range_run_covers(dagster_instance, definitions, source, warehouse):
    """One day built earlier (its materializations), then the seven days before it as ONE run of
    customer_daily (a single-run backfill) in a process of its own: evaluated again and again while
    that run goes, and once after, the automation requests nothing: the run builds those days'
    silver and the gold tables itself, and the seeds it rebuilds on the way do not make the day
    built earlier stale."""
    instance = dagster_instance
    customer_sample.seed(source, rows=120, end_date=RANGE_END, days=8)
    days = [(RANGE_END - timedelta(days=n)).isoformat() for n in range(8, 0, -1)]
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
    for key in (*SEEDS, BRONZE, SILVER, *GOLD):  # the last day, built earlier
        materialized(instance, key, days[-1] if key in (BRONZE, SILVER) else None)
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    assert tick.total_requested == 0, requested(tick)

    range_tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-2]}
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).parent / "faults" / "run_job.py"),
            "customer_daily",
            "",
            json.dumps(range_tags),
        ]
    )
    asked, during = {}, 0
    deadline = time.monotonic() + 600
    while child.poll() is None:
        assert time.monotonic() < deadline, "the range run did not end within 10 minutes"
        runs = instance.get_runs(dg.RunsFilter(tags=range_tags, statuses=[dg.DagsterRunStatus.STARTED]))
        bronze_done = runs and instance.get_latest_materialization_event(BRONZE).run_id == runs[0].run_id
        tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
        asked.update(requested(tick))
        during += bool(bronze_done and child.poll() is None)
        time.sleep(0.5)
    assert child.returncode == 0, "the range run failed"
    assert during, "the automation was never evaluated while the range run was building silver and gold"
    tick = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=tick.cursor)
    asked.update(requested(tick))
    assert not asked, f"the automation asked for work the range run covered: {asked}"
    assert instance.get_runs_count() == 1
