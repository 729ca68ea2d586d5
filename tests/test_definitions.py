"""The whole code location loads, with the assets, checks, job and schedule the domain promises."""

import dagster as dg


def test_the_code_location_has_every_customer_asset_check_job_and_schedule(definitions: dg.Definitions):
    graph = definitions.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "bronze/customer_profile_raw",
        "silver/customer_profile_standardized",
        "gold/dim_customer_profile",
        "gold/bridge_customer_contact_channel",
        "gold/fact_customer_profile_audit",
    } <= keys

    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {
        ("bronze/customer_profile_raw", "customer_profile_raw_expected_columns"),
        ("bronze/customer_profile_raw", "customer_profile_raw_no_all_null_rows"),
        ("bronze/customer_profile_raw", "customer_profile_raw_matches_source"),
        ("gold/dim_customer_profile", "assert_dim_no_overlapping_validity"),
        ("gold/dim_customer_profile", "assert_dim_one_current_row_per_customer"),
    } <= checks

    bronze = graph.get(dg.AssetKey(["bronze", "customer_profile_raw"]))
    silver = graph.get(dg.AssetKey(["silver", "customer_profile_standardized"]))
    assert bronze.partitions_def == silver.partitions_def
    assert bronze.backfill_policy == dg.BackfillPolicy.single_run()
    assert dg.AssetKey(["bronze", "customer_profile_raw"]) in silver.parent_keys

    schedule = definitions.resolve_schedule_def("customer_daily_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    job = definitions.resolve_job_def("customer_daily")
    assert job.op_retry_policy.max_retries == 3
