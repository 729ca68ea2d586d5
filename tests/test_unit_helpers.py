"""Pure helpers: identifier quoting, source queries, partition windows, dbt arguments."""

import importlib.metadata
import json
import os
import time
from datetime import date, datetime, timedelta, timezone
from functools import cached_property

import dagster as dg
import pytest
from dagster_dbt import DbtCliResource
from packaging.version import Version

from dw_platform.lib.bronze import LoadScope
from dw_platform.lib.dbt import (
    ALL_TIME,
    DBT_PROJECT,
    DbtCli,
    environment,
    failure_from,
    layer_and_domain,
    partition_keys_env,
    window_env,
)
from dw_platform.lib.dbt_invocations import prune_invocation_folders
from dw_platform.lib.odbc import quote_ident, quote_table, window_query
from dw_platform.samples import customer as customer_sample


@pytest.mark.parametrize(
    ("dialect", "name", "quoted"),
    [
        ("mssql", "last_modified_ts", "[last_modified_ts]"),
        ("mssql", "odd]name", "[odd]]name]"),
        ("mysql", "order", "`order`"),
        ("mysql", "a`b", "`a``b`"),
        ("postgresql", "Customer", '"Customer"'),
        ("postgresql", 'say "hi"', '"say ""hi"""'),
        ("oracle", "ID", '"ID"'),
        ("db2", "ID", '"ID"'),
    ],
)
def test_quote_ident_escapes_the_closing_quote_of_each_dialect(dialect, name, quoted):
    assert quote_ident(name, dialect) == quoted


def test_quote_ident_rejects_unknown_dialects_and_empty_names():
    with pytest.raises(ValueError, match="unknown SQL dialect 'sybase'"):
        quote_ident("x", "sybase")
    with pytest.raises(ValueError, match="empty identifier"):
        quote_ident("", "mssql")


def test_quote_table_quotes_schema_and_table_separately():
    assert quote_table("dbo.customer_profile", "mssql") == "[dbo].[customer_profile]"
    assert quote_table("crm.customer_profile", "mysql") == "`crm`.`customer_profile`"


def test_window_query_selects_a_half_open_window_with_parameters():
    query = window_query("dbo.customer_profile", ["customer_id", "email"], "last_modified_ts", "mssql")
    assert query == (
        "SELECT [customer_id], [email] FROM [dbo].[customer_profile] "
        "WHERE [last_modified_ts] >= ? AND [last_modified_ts] < ?"
    )


def test_time_window_scope_uses_naive_utc_bounds_and_names_its_partitions():
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    scope = LoadScope.time_window(["2026-11-20", "2026-11-21"], "ts", start, start + timedelta(days=2))
    assert scope.params == {"window_start": datetime(2026, 11, 20), "window_end": datetime(2026, 11, 22)}
    assert scope.label == "2026-11-20...2026-11-21"
    single = LoadScope.time_window(["2026-11-20"], "ts", start, start + timedelta(days=1))
    assert single.label == "2026-11-20"


def test_a_lookback_widens_what_is_read_but_not_the_partition_window():
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    scope = LoadScope.time_window(["2026-11-20"], "ts", start, start + timedelta(days=1), lookback=timedelta(hours=24))
    assert scope.params == {"window_start": datetime(2026, 11, 20), "window_end": datetime(2026, 11, 21)}
    assert scope.read_params == (datetime(2026, 11, 19), datetime(2026, 11, 21))


def test_the_dbt_window_is_utc_timestamps_with_an_exclusive_end():
    berlin = timezone(timedelta(hours=1))
    window = dg.TimeWindow(datetime(2026, 11, 20, 1, tzinfo=berlin), datetime(2026, 11, 21, 1, tzinfo=berlin))
    assert window_env(window) == {
        "DW_MIN_DATE": "2026-11-20 00:00:00",
        "DW_MAX_DATE": "2026-11-21 00:00:00",
        "DW_PARTITION_KEYS": "",
    }


def test_a_blob_or_file_partition_reaches_dbt_as_a_json_list_and_a_range_as_everything():
    one = partition_keys_env({"dagster/partition": "2026-11-23/it's.csv"})
    assert json.loads(one["DW_PARTITION_KEYS"]) == ["2026-11-23/it's.csv"]
    assert one["DW_MIN_DATE"].startswith("1900")  # no time window narrows a file-partitioned run
    ranged = {"dagster/asset_partition_range_start": "a.csv", "dagster/asset_partition_range_end": "b.csv"}
    assert partition_keys_env(ranged) == ALL_TIME and ALL_TIME["DW_PARTITION_KEYS"] == ""


def test_the_dbt_window_is_set_for_the_invocation_only(monkeypatch):
    monkeypatch.setenv("DW_MIN_DATE", "left by the caller")
    monkeypatch.delenv("DW_MAX_DATE", raising=False)
    with environment({"DW_MIN_DATE": "a", "DW_MAX_DATE": "b"}):
        assert (os.environ["DW_MIN_DATE"], os.environ["DW_MAX_DATE"]) == ("a", "b")
    assert os.environ["DW_MIN_DATE"] == "left by the caller"
    assert "DW_MAX_DATE" not in os.environ


def test_a_dbt_failure_is_retried_only_when_the_warehouse_connection_was_lost():
    tests_failed = failure_from(
        {
            "results": [
                {"unique_id": "test.dw_platform.not_null_x", "status": "fail"},
                {"unique_id": "model.dw_platform.x", "status": "success"},
            ]
        }
    )
    assert not tests_failed.allow_retries
    assert tests_failed.description == "dbt test failed: test.dw_platform.not_null_x"
    rejected = failure_from(
        {
            "results": [
                {
                    "unique_id": "model.dw_platform.x",
                    "status": "error",
                    "message": "Database Error in model x\n  column seen._bronze_row_hash does not exist",
                }
            ]
        }
    )
    assert not rejected.allow_retries
    assert rejected.description == (
        "dbt error: model.dw_platform.x: Database Error in model x column seen._bronze_row_hash does not exist"
    )
    lost = failure_from(
        {
            "results": [
                {
                    "unique_id": "model.dw_platform.x",
                    "status": "error",
                    "message": "Database Error\n  server closed the connection unexpectedly",
                }
            ]
        }
    )
    assert lost.allow_retries
    assert failure_from({}).allow_retries  # dbt did not get as far as running anything


def test_layer_and_domain_come_from_the_model_folder():
    assert layer_and_domain(["dw_platform", "silver", "customer", "customer_profile_standardized"]) == (
        "silver",
        "customer",
    )
    assert layer_and_domain(["dw_platform", "gold", "sales", "sales_daily_summary"]) == ("gold", "sales")
    assert layer_and_domain(["dw_platform", "silver", "customer_profile_standardized"]) is None


def test_sample_generator_is_deterministic_and_stays_in_its_window():
    end = date(2026, 11, 23)
    first = list(customer_sample.generate(500, end, days=3))
    assert first == list(customer_sample.generate(500, end, days=3))
    modified = [row[-1] for row in first]
    assert min(modified) >= datetime(2026, 11, 20) and max(modified) < datetime(2026, 11, 23)
    assert {row[0] for row in first} == set(range(1, 501))


def test_the_dbt_resource_knows_its_dbt_version_without_running_dbt():
    """DbtCli replaces dagster-dbt's `_cli_version` (`dbt --version`, which asks PyPI). The name is
    dagster-dbt's own: if it goes away, the replacement no longer applies and this fails."""
    assert isinstance(vars(DbtCliResource).get("_cli_version"), cached_property)
    assert DbtCli(project_dir=DBT_PROJECT)._cli_version == Version(importlib.metadata.version("dbt-core"))


def test_dbt_target_keeps_the_newest_invocation_folders_and_those_still_running(tmp_path):
    def invocation(name: str, age_s: float, finished: bool) -> None:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "dbt.log").write_text("...")
        if finished:
            (folder / "run_results.json").write_text("{}")
        for path in (folder / "dbt.log", folder):
            os.utime(path, (time.time() - age_s, time.time() - age_s))

    for i in range(25):  # dbt_models-<run id[:7]>-<random>, 25 finished runs, the newest first
        invocation(f"dbt_models-{i:07x}-abcdef{i % 10}", age_s=60 * (i + 1), finished=True)
    invocation("dbt_models-aaaaaaa-0000001", age_s=60 * 40, finished=False)  # running: its log moved a while ago
    invocation("dbt_models-bbbbbbb-0000002", age_s=7200, finished=False)  # killed two hours ago
    (tmp_path / "compiled").mkdir()  # dbt parse's own output
    (tmp_path / "manifest.json").write_text("{}")

    assert prune_invocation_folders(tmp_path, keep=20) == 6
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        [f"dbt_models-{i:07x}-abcdef{i % 10}" for i in range(20)]
        + ["dbt_models-aaaaaaa-0000001", "compiled", "manifest.json"]
    )
    assert prune_invocation_folders(tmp_path, keep=20) == 0
