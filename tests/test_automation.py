"""Silver and gold follow their upstream without a second click (declarative automation), and
runs execute in their own process, step after step (the in-process executor)."""

import dagster as dg

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
