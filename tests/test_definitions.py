"""The whole code location loads, with the assets, checks, job and schedule the domain promises."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from dw_platform.devenv.embedded import PROJECT_ROOT, stop_process
from dw_platform.lib.dbt import DBT_PROJECT, prepare_manifest


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
        ("bronze/customer_profile_raw", "customer_profile_raw_holds_every_source_version"),
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


def test_the_code_location_has_the_sales_asset_checks_job_sensor_and_unpartitioned_dbt_models(
    definitions: dg.Definitions,
):
    graph = definitions.resolve_asset_graph()
    bronze = graph.get(dg.AssetKey(["bronze", "sales"]))
    assert isinstance(bronze.partitions_def, dg.DynamicPartitionsDefinition)
    assert bronze.partitions_def.name == "sales_blobs"
    silver = graph.get(dg.AssetKey(["silver", "sales_cleaned"]))
    gold = graph.get(dg.AssetKey(["gold", "sales_daily_summary"]))
    assert silver.partitions_def is None and gold.partitions_def is None
    assert dg.AssetKey(["bronze", "sales"]) in silver.parent_keys

    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {
        ("bronze/sales", "sales_expected_columns"),
        ("bronze/sales", "sales_no_all_null_rows"),
        ("bronze/sales", "sales_rows_reconcile_with_blob"),
        ("silver/sales_cleaned", "unique_sales_cleaned_order_id"),
        ("silver/sales_cleaned", "assert_sales_total_amount_is_quantity_times_price"),
    } <= checks

    # The daily-partitioned dbt selection holds the customer's incremental model only.
    customer_silver = graph.get(dg.AssetKey(["silver", "customer_profile_standardized"]))
    assert customer_silver.partitions_def == graph.get(dg.AssetKey(["bronze", "customer_profile_raw"])).partitions_def

    sensor = definitions.resolve_sensor_def("sales_incoming_sensor")
    assert sensor.job_name == "sales_ingest"
    assert sensor.minimum_interval_seconds < 5  # a tick on every loop of Dagster's sensor daemon (5 s)
    job = definitions.resolve_job_def("sales_ingest")
    assert job.partitions_def == bronze.partitions_def
    assert job.op_retry_policy.max_retries == 3

    # The watch over incoming/ runs on its own schedule, not inside every ingest run.
    assert ("bronze/sales", "sales_incoming_not_stale") in checks
    watch = definitions.resolve_schedule_def("sales_incoming_watch_schedule")
    assert watch.job_name == "sales_incoming_watch" and watch.default_status == dg.DefaultScheduleStatus.RUNNING

    def checks_of(job_name: str) -> set[str]:
        return {k.name for k in definitions.resolve_job_def(job_name).asset_layer.asset_graph.asset_check_keys}

    assert checks_of("sales_incoming_watch") == {"sales_incoming_not_stale", "sales_no_identical_files"}
    assert not checks_of("sales_incoming_watch") & checks_of("sales_ingest")
    assert "sales_expected_columns" in checks_of("sales_ingest")


def test_the_code_location_has_the_video_bronze_assets_their_checks_and_job(definitions: dg.Definitions):
    graph = definitions.resolve_asset_graph()
    video = [dg.AssetKey(["bronze", n]) for n in ("video_users", "video_viewing_sessions", "content")]
    for key in video:
        node = graph.get(key)
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for asset in ("video_users", "video_viewing_sessions", "content"):
        for check in ("file_readable", "not_empty", "expected_columns", "no_all_null_rows"):
            assert (f"bronze/{asset}", f"{asset}_{check}") in checks
    job = definitions.resolve_job_def("video_daily")
    assert job.partitions_def == graph.get(video[0]).partitions_def
    assert job.op_retry_policy.max_retries == 3
    assert definitions.resolve_sensor_def("video_landing_sensor").job_name == "video_daily"
    assert ("silver/video_users", "assert_video_users_dates_parse") in checks
    # The landing zone's checks run on their own schedule, not inside every day's run.
    watch = definitions.resolve_schedule_def("video_landing_watch_schedule")
    assert watch.job_name == "video_landing_watch" and watch.default_status == dg.DefaultScheduleStatus.RUNNING
    watched = {
        k.name for k in definitions.resolve_job_def("video_landing_watch").asset_layer.asset_graph.asset_check_keys
    }
    assert watched == {
        f"{asset}_{check}"
        for asset in ("video_users", "video_viewing_sessions", "content")
        for check in ("files_not_waiting", "no_identical_files")
    }
    assert not watched & {k.name for k in job.asset_layer.asset_graph.asset_check_keys}
    # Silver is partitioned like the bronze it reads (a range run is one windowed build); gold is
    # not: its rows are per session day or per title, and it follows what silver changed.
    for model in (
        "silver/video_users",
        "silver/video_viewing_sessions",
        "silver/video_content",
        "silver/video_content_genres",
    ):
        assert graph.get(dg.AssetKey(model.split("/"))).partitions_def == graph.get(video[0]).partitions_def, model
    for model in ("gold/video_user_engagement", "gold/video_viewing_statistics", "gold/video_content_performance"):
        assert graph.get(dg.AssetKey(model.split("/"))).partitions_def is None
    assert dg.AssetKey(["bronze", "content"]) in graph.get(dg.AssetKey(["silver", "video_content"])).parent_keys
    assert {
        ("silver/video_viewing_sessions", "relationships_video_viewing_sessions_user_id__user_id__ref_video_users_"),
        ("gold/video_user_engagement", "assert_video_engagement_reconciles_with_silver"),
    } <= checks


def test_reference_lists_are_tested_seeds_each_domain_job_builds_with_its_own_models_only(definitions: dg.Definitions):
    graph = definitions.resolve_asset_graph()
    seeds = {
        "customer": {"silver/customer_country_aliases", "silver/customer_country_dial_codes"},
        "video": {"silver/video_country_aliases", "silver/video_device_aliases"},
    }
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for domain, keys in seeds.items():
        for key in keys:
            node = graph.get(dg.AssetKey(key.split("/")))
            assert "seed" in node.kinds and node.group_name == domain, key
            assert any(asset == key and name.startswith(("unique_", "not_null_")) for asset, name in checks), key
    assert ("silver/customer_country_aliases", "unique_customer_country_aliases_country_alias") in checks

    # A fresh warehouse has no seed tables: each daily job builds its domain's seeds, and nothing
    # upstream from another domain (no other bronze, no other domain's seeds).
    for job_name, domain in (("customer_daily", "customer"), ("video_daily", "video")):
        selected = definitions.resolve_job_def(job_name).asset_layer.selected_asset_keys
        assert {k.to_user_string() for k in selected if "seed" in graph.get(k).kinds} == seeds[domain]
        assert {graph.get(k).group_name for k in selected} == {domain}, job_name


def test_every_check_schedule_and_sensor_says_what_it_does_and_dbt_assets_link_to_their_sql(
    definitions: dg.Definitions,
):
    graph = definitions.resolve_asset_graph()
    undescribed = [
        key.to_user_string()
        for key in graph.asset_check_keys
        if not (graph.get_check_spec(key).description or "").strip()
    ]
    assert undescribed == []
    for schedule in definitions.schedules:
        assert schedule.description, schedule.name
    for sensor in definitions.sensors:
        assert sensor.description, sensor.name
    not_null = graph.get_check_spec(
        dg.AssetCheckKey(dg.AssetKey(["gold", "dim_customer_profile"]), "not_null_dim_customer_profile_customer_id")
    )
    assert "select * from gold.dim_customer_profile where customer_id is null" in not_null.description
    references = graph.get(dg.AssetKey(["gold", "dim_customer_profile"])).metadata["dagster/code_references"]
    assert references.code_references[0].file_path.endswith("models/gold/customer/dim_customer_profile.sql")


def test_every_asset_links_to_its_code_and_every_python_asset_describes_its_columns(definitions: dg.Definitions):
    graph = definitions.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        references = node.metadata["dagster/code_references"].code_references
        assert references and all(Path(r.file_path).exists() for r in references), key
        if "dagster/kind/dbt" in node.tags or key.path[:2] == ["bronze", "lakehouse"]:
            # dbt models: the columns their .yml documents; the lakehouse: a partition per source
            # table, each materialization describes its table's columns.
            continue
        columns = node.metadata["dagster/column_schema"].columns
        undescribed = [c.name for c in columns if not c.description]
        assert columns and not undescribed, f"{key.to_user_string()}: undescribed columns {undescribed}"
    bronze = graph.get(dg.AssetKey(["bronze", "customer_profile_raw"]))
    assert bronze.metadata["dagster/code_references"].code_references[0].file_path.endswith("defs/customer/assets.py")


def test_code_references_open_the_repository_when_one_is_configured(monkeypatch):
    monkeypatch.setenv("DW_GIT_URL", "https://github.com/acme/dw_platform")
    monkeypatch.setenv("DW_GIT_BRANCH", "release")
    from dw_platform.definitions import defs

    graph = defs().resolve_asset_graph()
    urls = {
        key.to_user_string(): graph.get(key).metadata["dagster/code_references"].code_references[0].url
        for key in (dg.AssetKey(["bronze", "sales"]), dg.AssetKey(["gold", "dim_customer_profile"]))
    }
    assert urls["bronze/sales"].startswith(
        "https://github.com/acme/dw_platform/tree/release/dw_platform/defs/sales/assets.py#L"
    )
    assert urls["gold/dim_customer_profile"] == (
        "https://github.com/acme/dw_platform/tree/release/dbt_project/models/gold/customer/dim_customer_profile.sql"
    )


def test_every_asset_belongs_to_a_domain_with_its_tag_owner_and_kinds(definitions: dg.Definitions):
    from dw_platform.domains import OWNERS

    graph = definitions.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in OWNERS, key
        assert node.tags.get("domain") == node.group_name and node.owners == [OWNERS[node.group_name]], key
        assert node.kinds, key
        assert key.path[0] in ("bronze", "silver", "gold"), key


def test_the_code_location_has_the_replication_lakehouse_asset_its_checks_and_jobs(definitions: dg.Definitions):
    graph = definitions.resolve_asset_graph()
    key = dg.AssetKey(["bronze", "lakehouse", "source_app"])
    lakehouse = graph.get(key)
    assert isinstance(lakehouse.partitions_def, dg.DynamicPartitionsDefinition)
    assert lakehouse.partitions_def.name == "replication_source_app_tables"
    assert lakehouse.backfill_policy == dg.BackfillPolicy.single_run()  # one run = one consistent snapshot
    assert lakehouse.group_name == "replication" and lakehouse.owners == ["team:data-platform"]
    assert "iceberg" in lakehouse.kinds
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == key}
    assert checks >= {
        "rows_match_snapshot",
        "primary_key_unique",
        "no_failed_tables",
        "schema_change_notifications_sent",
    }
    assert definitions.resolve_assets_def(key).can_subset  # so each check runs alone from the UI
    # The change data capture job evaluates them after applying (without a partition of its own).
    cdc = definitions.resolve_job_def("replication_cdc_source_app")
    assert cdc.partitions_def is None and key.to_python_identifier() in {n.name for n in cdc.graph.node_defs}
    bulk = definitions.resolve_job_def("replication_bulk_load_source_app")
    assert bulk.partitions_def == lakehouse.partitions_def
    assert bulk.op_retry_policy.backoff == dg.Backoff.EXPONENTIAL
    definitions.resolve_job_def("replication_discover")
    definitions.resolve_job_def("validate_lakehouse")


def test_the_code_location_has_the_softcart_assets_checks_jobs_schedule_and_sensor(definitions: dg.Definitions):
    graph = definitions.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "bronze/softcart_sales_data",
        "bronze/softcart_products",
        "bronze/softcart_customers",
        "bronze/web_access_log",
        "silver/softcart_categories",
        "silver/softcart_countries",
        "silver/softcart_bot_agents",
        "silver/softcart_sales",
        "silver/web_requests",
        "gold/softcart_dim_date",
        "gold/softcart_dim_category",
        "gold/softcart_dim_country",
        "gold/softcart_fact_sales",
        "gold/softcart_sales_summary",
        "gold/web_traffic_daily",
        "gold/web_traffic_hourly",
        "gold/web_top_paths",
    } <= keys
    for key in (
        "bronze/softcart_sales_data",
        "silver/softcart_sales",
        "gold/softcart_fact_sales",
        "gold/web_top_paths",
    ):
        node = graph.get(dg.AssetKey(key.split("/")))
        assert node.group_name == "softcart" and node.tags["domain"] == "softcart"

    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {
        ("bronze/softcart_sales_data", "softcart_sales_data_expected_columns"),
        ("bronze/softcart_sales_data", "softcart_sales_data_rowid_unique"),
        ("bronze/softcart_sales_data", "softcart_sales_data_no_data_lost"),
        ("bronze/softcart_sales_data", "softcart_sales_data_no_all_null_rows"),
        ("bronze/web_access_log", "web_access_log_lines_reconcile_with_file"),
        ("gold/softcart_sales_summary", "assert_softcart_revenue_reconciles"),
        ("gold/softcart_fact_sales", "assert_softcart_fact_rows_equal_valid_silver_rows"),
    } <= checks

    schedule = definitions.resolve_schedule_def("softcart_sync_schedule")
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    sensor = definitions.resolve_sensor_def("softcart_weblogs_sensor")
    assert sensor.job_name == "softcart_weblogs" and sensor.default_status == dg.DefaultSensorStatus.STOPPED
    weblogs = definitions.resolve_job_def("softcart_weblogs")
    assert weblogs.partitions_def == graph.get(dg.AssetKey(["bronze", "web_access_log"])).partitions_def
    watch = definitions.resolve_schedule_def("softcart_weblogs_watch_schedule")
    assert watch.job_name == "softcart_weblogs_watch" and watch.default_status == dg.DefaultScheduleStatus.RUNNING
    watched = {
        k.name for k in definitions.resolve_job_def("softcart_weblogs_watch").asset_layer.asset_graph.asset_check_keys
    }
    assert watched == {"web_access_log_incoming_not_stale", "web_access_log_no_identical_files"}
    assert not watched & {k.name for k in weblogs.asset_layer.asset_graph.asset_check_keys}


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> dict[str, str]:
    """The environment of a fresh clone: no DAGSTER_HOME, no DW_* or DAGSTER_* settings, .venv/bin
    not on PATH, and no state yet (DW_HOME, where the embedded servers keep it, is empty)."""
    return {
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PATH": "/usr/bin:/bin",
        "DW_HOME": str(tmp_path_factory.mktemp("fresh_clone") / "dw"),
    }


def test_dagster_in_the_project_root_loads_the_code_location_without_settings_or_an_activated_venv(fresh_clone):
    """As `dagster dev` on a fresh clone: it reads the project's dagster.yaml, whose storage starts
    the embedded PostgreSQL; DAGSTER_IS_DEV_CLI makes the code location prepare the dbt manifest
    (`dbt parse`) on load."""
    DBT_PROJECT.manifest_path.with_name("manifest_inputs.json").unlink(missing_ok=True)  # as on a fresh clone
    env = {**fresh_clone, "DAGSTER_IS_DEV_CLI": "1"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "dbt parse" in result.stdout and "All code locations passed validation" in result.stdout


@pytest.mark.parametrize("command", [["dagster", "dev"], ["dg", "dev"]])
def test_dagster_dev_and_dg_dev_in_the_project_root_run_on_the_embedded_postgresql_of_a_fresh_clone(
    fresh_clone, command, tmp_path
):
    """The UI answers with the code location loaded and the instance on PostgreSQL (dagster-postgres,
    as under `dw dev`); Ctrl-C stops Dagster and the PostgreSQL it started."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / command[0]), *command[1:], "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=fresh_clone,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        location = None
        while location is None or location["locationOrLoadError"] is None:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
            try:
                data = graphql(
                    url,
                    "{ instance { info } workspaceOrError { ... on Workspace { locationEntries "
                    "{ name locationOrLoadError { __typename ... on PythonError { message } } } } } }",
                )
            except OSError:
                continue
            location = (data["workspaceOrError"]["locationEntries"] or [None])[0]
        assert location["name"] == "dw_platform"
        assert location["locationOrLoadError"]["__typename"] == "RepositoryLocation", location
        storage = [line for line in data["instance"]["info"].splitlines() if line.startswith("run_storage")]
        assert storage == ["run_storage: PostgresRunStorage"]

        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in its terminal
        assert process.wait(timeout=180) == 0, log.read_text()[-3000:]
        postmaster = Path(fresh_clone["DW_HOME"]) / "pg" / "postmaster.pid"
        deadline = time.monotonic() + 60
        while postmaster.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not postmaster.exists(), "the embedded PostgreSQL outlived dagster dev"
    finally:
        stop_process(process, grace_s=30, group=True)


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", json.dumps({"query": query}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def test_the_dbt_manifest_is_parsed_again_only_when_a_project_file_or_a_connection_setting_changed(server, monkeypatch):
    """Under `dagster dev` every run's process loads the code location; re-parsing there cost ~6 s
    of each run's start. The manifest the last parse wrote is kept while nothing it depends on changed."""
    manifest = DBT_PROJECT.manifest_path
    prepare_manifest()
    parsed = manifest.stat().st_mtime_ns
    prepare_manifest()
    assert manifest.stat().st_mtime_ns == parsed, "parsed again with nothing changed"

    monkeypatch.setenv("DW_PG_SSLMODE", "allow")  # a setting profiles.yml reads (the session sets disable)
    prepare_manifest()
    assert manifest.stat().st_mtime_ns > parsed, "not parsed again after a connection setting changed"
    parsed = manifest.stat().st_mtime_ns

    monkeypatch.undo()  # the session's settings again, parsed below with the edited model
    model = DBT_PROJECT.project_dir / "models" / "silver" / "customer" / "customer_profile_standardized.sql"
    os.utime(model)  # as an editor saving the model
    prepare_manifest()
    assert manifest.stat().st_mtime_ns > parsed, "not parsed again after a model changed"
