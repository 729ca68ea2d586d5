"""The customer domain end to end on a real PostgreSQL, through psqlODBC, with the real dbt project."""

import json
import os
import subprocess
import sys
from datetime import date, datetime, timezone

import dagster as dg
import pytest
from conftest import assert_column_lineage, run_job, warehouse_from_env

from dw_platform.defs.customer.assets import customer_profile_raw
from dw_platform.defs.customer.checks import customer_profile_raw_holds_every_source_version
from dw_platform.defs.customer.partitions import START_DATE
from dw_platform.lib.dbt import DBT_PROJECT, DbtCli
from dw_platform.lib.odbc import OdbcSource
from dw_platform.samples import customer as customer_sample

DAY1, DAY2, DAY3 = date(2026, 11, 10), date(2026, 11, 11), date(2026, 11, 12)
COLUMNS = ", ".join(customer_sample.COLUMNS)


def add_customer(source, customer_id, modified: datetime, email="ann@example.com", loyalty_tier="gold", **other):
    row = {
        "customer_id": customer_id,
        "first_name": " ann ",
        "last_name": "LEE",
        "email": email,
        "phone": "(555) 123-4567",
        "country": "usa",
        "city": "austin",
        "date_of_birth": date(1990, 5, 1),
        "customer_segment": "Retail",
        "loyalty_tier": loyalty_tier,
        "marketing_opt_in": True,
        "created_ts": datetime(2024, 1, 1),
        "last_modified_ts": modified,
        **other,
    }
    source.execute(
        f"insert into dbo.customer_profile ({COLUMNS}) values ({', '.join(['%s'] * len(row))})",
        [row[c] for c in customer_sample.COLUMNS],
    )


@pytest.fixture
def crm(source):
    """A small source: customers 1-3 modified on DAY1, 4-5 on DAY2, one row on DAY3."""
    source.execute(customer_sample.DDL)
    for cid in (1, 2, 3):
        add_customer(source, cid, datetime(2026, 11, 10, 8 + cid), email=f"c{cid}@example.com")
    for cid in (4, 5):
        add_customer(source, cid, datetime(2026, 11, 11, 8 + cid), email=f"c{cid}@example.com")
    add_customer(source, 6, datetime(2026, 11, 12, 23, 59, 59))
    return source


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def metadata_of(result: dg.ExecuteInProcessResult, asset: str, partition: str | None = None) -> dict:
    return next(
        m.metadata
        for e in result.get_asset_materialization_events()
        for m in [e.event_specific_data.materialization]
        if m.asset_key.to_user_string() == asset and m.partition == partition
    )


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        m.asset_key.to_user_string()
        for m in result.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }


def test_a_partition_loads_exactly_its_days_rows_with_lineage_ledger_and_watermark(definitions, crm, warehouse):
    result = run_job(definitions, DAY1)

    assert result.success
    rows = warehouse.execute(
        "select customer_id, _bronze_batch_id, _bronze_source_file, _bronze_load_ts"
        " from bronze.customer_profile_raw order by customer_id"
    ).fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]
    assert len({r[1] for r in rows}) == 1 and all(r[3] is not None for r in rows)
    assert rows[0][2] == "customer_crm:dbo.customer_profile"
    ledger = warehouse.execute(
        "select batch_id, partition_key, rows_loaded, status, window_start::date, window_end::date"
        " from bronze.batch_ledger"
    ).fetchall()
    assert ledger == [(rows[0][1], "2026-11-10", 3, "succeeded", DAY1, DAY2)]
    watermark = warehouse.execute("select last_watermark_ts, records_extracted from bronze.etl_watermarks").fetchone()
    assert watermark == (datetime(2026, 11, 10, 11), 3)
    assert all(check_results(result).values()), check_results(result)
    assert {
        "bronze/customer_profile_raw",
        "silver/customer_profile_standardized",
        "gold/dim_customer_profile",
    } <= materialized(result)

    # dbt models report their row count, typed columns and column-level lineage after the build.
    dim = metadata_of(result, "gold/dim_customer_profile")
    assert dim["dagster/row_count"].value == 3
    columns = {c.name: c for c in dim["dagster/column_schema"].value.columns}
    assert columns["valid_from"].type.startswith("timestamp") and columns["customer_id"].type == "integer"
    assert columns["valid_from"].description, "a column's description from the model's .yml"
    assert_column_lineage(result)
    email_from = dim["dagster/column_lineage"].value.deps_by_column["email"]
    assert (dg.AssetKey(["silver", "customer_profile_standardized"]), "email") in {
        (dep.asset_key, dep.column_name) for dep in email_from
    }


def test_rematerializing_a_partition_adds_nothing_it_already_holds(definitions, crm, warehouse):
    assert run_job(definitions, DAY1).success
    assert run_job(definitions, DAY1).success

    counts = warehouse.execute(
        "select count(*), count(distinct _bronze_batch_id) from bronze.customer_profile_raw"
    ).fetchone()
    assert counts == (3, 1)
    assert warehouse.execute("select count(*) from silver.customer_profile_standardized").fetchone()[0] == 3
    ledger = warehouse.execute(
        "select rows_read, rows_loaded, rows_replaced from bronze.batch_ledger order by finished_at"
    ).fetchall()
    assert ledger == [(3, 3, 0), (3, 0, 0)]


def test_re_runs_and_backfills_keep_every_version_and_late_rows_still_arrive(definitions, crm, warehouse):
    assert run_job(definitions, DAY1).success
    crm.execute(
        "update dbo.customer_profile set email = 'new@example.com', last_modified_ts = '2026-11-12 09:00'"
        " where customer_id = 2"
    )
    assert run_job(definitions, DAY3).success
    # Day 1 no longer holds customer 2 in the source: re-running it, alone or in a backfill, must
    # not lose the day-1 version.
    assert run_job(definitions, DAY1).success
    assert run_job(definitions, DAY1, DAY3).success

    def versions(table, ts_column):
        return warehouse.execute(
            f"select email, {ts_column} from {table} where customer_id = 2 order by {ts_column}"
        ).fetchall()

    both = [("c2@example.com", datetime(2026, 11, 10, 10)), ("new@example.com", datetime(2026, 11, 12, 9))]
    assert versions("bronze.customer_profile_raw", "last_modified_ts") == both
    assert versions("silver.customer_profile_standardized", "last_modified_ts") == both
    assert versions("gold.dim_customer_profile", "valid_from") == both
    assert warehouse.execute(
        "select attribute_name, old_value, new_value from gold.fact_customer_profile_audit where customer_id = 2"
    ).fetchall() == [("email", "c2@example.com", "new@example.com")]
    assert warehouse.execute(
        "select count(*) = count(distinct _bronze_row_hash) from bronze.customer_profile_raw"
    ).fetchone()[0]

    # A row committed on the source after its day (DAY2) was loaded reaches bronze, silver and
    # gold with the next daily run (DAY3), whose lookback re-reads DAY2.
    assert run_job(definitions, DAY2).success
    add_customer(crm, 9, datetime(2026, 11, 11, 22), email="late@example.com")
    assert run_job(definitions, DAY3).success
    for table in ("bronze.customer_profile_raw", "silver.customer_profile_standardized", "gold.dim_customer_profile"):
        assert warehouse.execute(f"select count(*) from {table} where customer_id = 9").fetchone()[0] == 1, table
    watermark = warehouse.execute(
        "select last_read_start, last_read_end, last_partition_key from bronze.etl_watermarks"
    ).fetchone()
    assert watermark == (datetime(2026, 11, 11), datetime(2026, 11, 13), "2026-11-12")


def test_a_date_range_backfills_in_one_run_and_keeps_the_window_end_exclusive(definitions, crm, warehouse):
    result = run_job(definitions, DAY1, DAY2)

    assert result.success
    ids = [r[0] for r in warehouse.execute("select customer_id from bronze.customer_profile_raw order by 1")]
    assert ids == [1, 2, 3, 4, 5]  # customer 6 belongs to DAY3
    assert warehouse.execute("select partition_key, rows_loaded from bronze.batch_ledger").fetchall() == [
        ("2026-11-10...2026-11-11", 5)
    ]
    # Each partition of the range shows its own rows beside the whole table's.
    for asset in ("bronze/customer_profile_raw", "silver/customer_profile_standardized"):
        for day, rows in (("2026-11-10", 3), ("2026-11-11", 2)):
            metadata = metadata_of(result, asset, day)
            assert metadata["dagster/partition_row_count"].value == rows, asset
            assert metadata["dagster/row_count"].value == 5, asset
    assert metadata_of(result, "bronze/customer_profile_raw", "2026-11-11")["rows_loaded"].value == 2

    # A day without changes: nothing in its partition, and the table's rows beside it (the run read
    # back to where the last load stopped, so customer 6 arrived too, in its own day).
    empty = run_job(definitions, date(2026, 11, 15))
    for asset in ("bronze/customer_profile_raw", "silver/customer_profile_standardized"):
        metadata = metadata_of(empty, asset, "2026-11-15")
        (total,) = warehouse.execute(f"select count(*) from {asset.replace('/', '.')}").fetchone()
        assert (metadata["dagster/partition_row_count"].value, metadata["dagster/row_count"].value) == (0, 6), asset
        assert total == 6, asset


def test_a_range_over_months_loads_and_commits_a_month_at_a_time_with_progress_in_the_log(definitions, crm, warehouse):
    add_customer(crm, 7, datetime(2026, 10, 30, 12))
    add_customer(crm, 8, datetime(2026, 12, 1, 0, 0, 1))

    instance = dg.DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "2026-10-30", "dagster/asset_partition_range_end": "2026-12-01"}
    result = definitions.resolve_job_def("customer_daily").execute_in_process(instance=instance, tags=tags)

    assert result.success
    ids = [r[0] for r in warehouse.execute("select customer_id from bronze.customer_profile_raw order by 1")]
    assert ids == [1, 2, 3, 4, 5, 6, 7, 8]
    ledger = warehouse.execute("select partition_key, rows_loaded from bronze.batch_ledger order by started_at")
    assert ledger.fetchall() == [("2026-10-30...2026-10-31", 1), ("2026-11-01...2026-11-30", 6), ("2026-12-01", 1)]
    # One line per month: its rows and speed, the run's so far and an ETA.
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    progress = [m for m in logs if m.startswith("month ")]
    assert [p.split(":")[0] for p in progress] == [
        "month 1/3 (2026-10-30...2026-10-31)",
        "month 2/3 (2026-11-01...2026-11-30)",
        "month 3/3 (2026-12-01)",
    ]
    # November reads back to where October stopped (customer 7's version, held already).
    assert "7 rows read, 6 new" in progress[1] and "ETA" in progress[1]
    assert metadata_of(result, "bronze/customer_profile_raw", "2026-11-10")["rows_loaded"].value == 3
    assert metadata_of(result, "bronze/customer_profile_raw", "2026-12-01")["dagster/row_count"].value == 8


def test_a_source_change_adds_a_second_scd2_version_and_audit_rows(definitions, crm, warehouse):
    assert run_job(definitions, DAY1, DAY2).success
    crm.execute(
        "update dbo.customer_profile set email = 'new@example.com', country = 'Canada',"
        " last_modified_ts = '2026-11-12 09:00' where customer_id = 2"
    )
    assert run_job(definitions, DAY3).success

    versions = warehouse.execute(
        "select email, country_code, is_current, valid_to is null from gold.dim_customer_profile"
        " where customer_id = 2 order by valid_from"
    ).fetchall()
    assert versions == [("c2@example.com", "US", False, False), ("new@example.com", "CA", True, True)]
    audit = warehouse.execute(
        "select attribute_name, old_value, new_value, changed_at from gold.fact_customer_profile_audit"
        " where customer_id = 2 order by attribute_name"
    ).fetchall()
    assert audit == [
        ("country_code", "US", "CA", datetime(2026, 11, 12, 9)),
        ("email", "c2@example.com", "new@example.com", datetime(2026, 11, 12, 9)),
    ]
    assert (
        warehouse.execute(
            "select count(*) from gold.dim_customer_profile where is_current group by customer_id having count(*) > 1"
        ).fetchall()
        == []
    )


def test_the_sample_crm_changes_customers_between_daily_loads_so_gold_holds_their_history(
    definitions, source, warehouse
):
    customer_sample.seed(source, rows=200, end_date=DAY3, days=2)  # modified on DAY1 and DAY2
    assert run_job(definitions, DAY1).success
    changed = customer_sample.change_customers(source, DAY2)
    assert changed > 0 and customer_sample.change_customers(source, DAY2) == 0
    assert run_job(definitions, DAY2).success

    versions = dict(
        warehouse.execute(
            "select customer_id, count(*) from gold.dim_customer_profile group by 1 having count(*) > 1"
        ).fetchall()
    )
    assert len(versions) == changed and set(versions.values()) == {2}
    assert all(cid % customer_sample.CHANGED_EVERY == 0 for cid in versions)
    audited = warehouse.execute(
        "select count(distinct customer_id), count(*) filter (where attribute_name = 'loyalty_tier'),"
        " count(*) filter (where attribute_name = 'marketing_opt_in') from gold.fact_customer_profile_audit"
    ).fetchone()
    assert audited == (changed, changed, changed)
    assert customer_sample.history_summary(warehouse).startswith(f"history: {changed} customers with more than one")


def test_an_all_null_source_row_fails_the_bronze_check_and_blocks_silver(definitions, crm, warehouse):
    crm.execute("insert into dbo.customer_profile (last_modified_ts) values ('2026-11-10 12:00')")

    result = run_job(definitions, DAY1)

    assert check_results(result)["customer_profile_raw_no_all_null_rows"] is False
    assert "bronze/customer_profile_raw" in materialized(result)
    assert "silver/customer_profile_standardized" not in materialized(result)
    assert not result.success


def test_runs_leave_the_dbt_unit_tests_to_the_test_suite_which_runs_them(definitions, crm, warehouse):
    result = run_job(definitions, DAY1)  # builds what the unit tests' fixtures are typed after
    assert result.success
    ran = DbtCli(project_dir=DBT_PROJECT).cli(["test", "--select", "test_type:unit"], raise_on_error=False).wait()

    assert ran.is_successful()
    outcomes = {r["unique_id"].rsplit(".", 1)[-1]: r["status"] for r in ran.get_artifact("run_results.json")["results"]}
    assert outcomes == {
        "test_customer_profile_standardized_cleansing": "pass",
        "test_customer_profile_standardized_dedupe": "pass",
    }
    (build,) = (DBT_PROJECT.project_dir / "target").glob(f"dbt_models-{result.run_id[:7]}-*/run_results.json")
    run_nodes = [r["unique_id"] for r in json.loads(build.read_text())["results"]]
    assert run_nodes and not [node for node in run_nodes if node.startswith("unit_test.")]


def test_an_unknown_loyalty_tier_fails_the_silver_accepted_values_test(definitions, crm, warehouse):
    add_customer(crm, 7, datetime(2026, 11, 10, 15), loyalty_tier="diamond")

    result = run_job(definitions, DAY1)

    checks = check_results(result)
    failed = [name for name, passed in checks.items() if not passed]
    assert failed == [
        "accepted_values_customer_profile_standardized_loyalty_tier__none__bronze__silver__gold__platinum"
    ]
    assert "gold/dim_customer_profile" not in materialized(result)


def test_the_source_version_check_run_on_its_own_fails_when_bronze_misses_a_source_row(definitions, crm, warehouse):
    assert run_job(definitions, DAY1).success
    resources = {"warehouse": warehouse_from_env(), "customer_source": source_resource()}
    context = dg.build_asset_check_context()
    assert customer_profile_raw_holds_every_source_version(context, **resources).passed

    add_customer(crm, 8, datetime(2026, 11, 10, 16))  # arrives after the load

    result = customer_profile_raw_holds_every_source_version(context, **resources)
    assert not result.passed
    assert result.metadata["source_rows_missing_in_bronze"].value == 1
    assert result.metadata["source_rows"].value == 4 and result.metadata["bronze_versions"].value == 3


def test_an_unreachable_source_fails_with_a_clear_message_and_a_failed_ledger_entry(crm, warehouse):
    # The bare asset, without the job's retry policy: the message is the point here, not the retries.
    broken = OdbcSource(
        connection_string="Driver={PostgreSQL Unicode};Servername=/nonexistent;Database=x",
        dialect="postgresql",
        name="customer_crm",
    )

    result = dg.materialize(
        [customer_profile_raw],
        partition_key=DAY1.isoformat(),
        resources={"warehouse": warehouse_from_env(), "customer_source": broken},
        raise_on_error=False,
    )

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "cannot connect to customer_crm over ODBC" in failure.step_failure_data.user_failure_data.description
    assert warehouse.execute("select status, rows_loaded from bronze.batch_ledger").fetchall() == [("failed", 0)]
    assert warehouse.execute("select count(*) from bronze.customer_profile_raw").fetchone()[0] == 0


def source_resource() -> OdbcSource:
    return OdbcSource(connection_string=os.environ["DW_CUSTOMER_ODBC"], dialect="postgresql", name="customer_crm")


def bronze_only(partition_key: str, source: OdbcSource | None = None, lookback_hours: int = 24):
    """The bronze asset alone for one partition (no dbt), as the job runs it."""
    return dg.materialize(
        [customer_profile_raw],
        partition_key=partition_key,
        resources={"warehouse": warehouse_from_env(), "customer_source": source or source_resource()},
        run_config={"ops": {"bronze__customer_profile_raw": {"config": {"lookback_hours": lookback_hours}}}},
        raise_on_error=False,
    )


def test_a_run_after_a_failed_one_picks_up_where_the_last_load_stopped(crm, warehouse):
    assert bronze_only(DAY1.isoformat()).success
    stopped = warehouse.execute("select last_watermark_ts from bronze.etl_watermarks").fetchone()[0]
    assert stopped == datetime(2026, 11, 10, 11)
    unreachable = OdbcSource(
        connection_string="Driver={PostgreSQL Unicode};Servername=/nonexistent;Database=x", name="customer_crm"
    )
    assert not bronze_only(DAY2.isoformat(), source=unreachable).success  # DAY2 failed: its rows were not read
    assert warehouse.execute("select last_watermark_ts from bronze.etl_watermarks").fetchone()[0] == stopped

    # DAY3 without any lookback still reads DAY2's rows: it reads from where the last load stopped.
    assert bronze_only(DAY3.isoformat(), lookback_hours=0).success

    ids = [r[0] for r in warehouse.execute("select customer_id from bronze.customer_profile_raw order by 1")]
    assert ids == [1, 2, 3, 4, 5, 6]
    assert warehouse.execute(
        "select read_start, rows_loaded from bronze.batch_ledger where partition_key = %s and status = 'succeeded'",
        (DAY3.isoformat(),),
    ).fetchone() == (stopped.replace(tzinfo=timezone.utc), 3)
    assert warehouse.execute("select last_watermark_ts from bronze.etl_watermarks").fetchone()[0] == datetime(
        2026, 11, 12, 23, 59, 59
    )


def test_the_first_partition_is_the_history_load_of_older_and_undated_rows(definitions, crm, warehouse):
    add_customer(crm, 7, datetime(2019, 5, 1, 12), email="old@example.com")
    add_customer(crm, 8, None, email="undated@example.com")
    first = START_DATE.isoformat()

    result = bronze_only(first)

    assert result.success
    assert warehouse.execute(
        "select customer_id, last_modified_ts from bronze.customer_profile_raw order by 1"
    ).fetchall() == [(7, datetime(2019, 5, 1, 12)), (8, None)]
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert "history" in meta and meta["rows_loaded_in_run"].value == 2
    again = bronze_only(first).get_asset_materialization_events()[0].materialization.metadata
    assert again["rows_loaded_in_run"].value == 0
    # The first day's job takes the older versions into silver and gold; silver's versions need a
    # modification time, so the undated row stays in bronze only.
    assert run_job(definitions, START_DATE).success
    assert [r[0] for r in warehouse.execute("select customer_id from silver.customer_profile_standardized")] == [7]
    assert [r[0] for r in warehouse.execute("select customer_id from gold.dim_customer_profile")] == [7]


def test_the_first_day_of_the_partitions_is_configuration():
    shown = subprocess.run(
        [sys.executable, "-c", "from dw_platform.defs.customer.partitions import customer_daily as d; print(d.start)"],
        env={**os.environ, "DW_CUSTOMER_START_DATE": "2021-03-01"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip().startswith("2021-03-01")
