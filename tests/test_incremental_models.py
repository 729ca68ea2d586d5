"""Every incremental dbt model, built partition by partition through its domain's job, holds
exactly what a full refresh of it builds from the same bronze (`dbt run --full-refresh`)."""

import json
import os
import subprocess
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import dagster as dg
import pytest
from conftest import run_job
from test_customer_pipeline import add_customer
from test_softcart_star_schema import sync as sync_softcart
from test_softcart_weblogs import ingest as ingest_log

from dw_platform.lib.dbt import ALL_TIME, DBT_PROJECT
from dw_platform.samples import customer as customer_sample
from dw_platform.samples.softcart import access_log, insert_sales, sales_rows, seed_reference_data

CUSTOMER_MODELS = [
    "silver.customer_profile_standardized",
    "gold.dim_customer_profile",
    "gold.bridge_customer_contact_channel",
    "gold.fact_customer_profile_audit",
]
WEB_MODELS = [
    "silver.web_requests",
    "gold.web_traffic_daily",
    "gold.web_traffic_hourly",
    "gold.web_top_paths",
]
SOFTCART_MODELS = ["silver.softcart_sales", "gold.softcart_fact_sales", "gold.softcart_sales_monthly"]
# Every incremental model of the project, with the test that compares it with a full refresh.
COVERED = {
    **dict.fromkeys(CUSTOMER_MODELS, "test_customer_models_built_day_by_day_equal_a_full_refresh"),
    **dict.fromkeys(WEB_MODELS, "test_web_traffic_built_file_by_file_equals_a_full_refresh"),
    **dict.fromkeys(SOFTCART_MODELS, "test_softcart_star_schema_built_sync_by_sync_equals_a_full_refresh"),
}


def snapshot(warehouse, tables: list[str]) -> None:
    warehouse.execute("create schema if not exists incremental")
    for table in tables:
        name = table.replace(".", "__")
        warehouse.execute(f"drop table if exists incremental.{name}")
        warehouse.execute(f"create table incremental.{name} as select * from {table}")


def full_refresh(tables: list[str]) -> None:
    models = [table.split(".")[1] for table in tables]
    folders = ["--project-dir", str(DBT_PROJECT.project_dir), "--profiles-dir", str(DBT_PROJECT.profiles_dir)]
    ran = subprocess.run(
        ["dbt", "run", "--full-refresh", "--select", *models, *folders],
        env={**os.environ, **ALL_TIME},
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stdout[-3000:]


def assert_incremental_equals_full_refresh(warehouse, tables: list[str]) -> None:
    """Snapshot the tables as the incremental builds left them, rebuild them in full, and compare
    every row (as a multiset) and the row counts; an empty table would prove nothing. `_built_at`
    (when a row was built) is the one column that differs by design."""
    snapshot(warehouse, tables)
    full_refresh(tables)
    for table in tables:
        copy = "incremental." + table.replace(".", "__")
        rows = warehouse.execute(f"select count(*) from {table}").fetchone()[0]
        assert rows > 0, table
        assert warehouse.execute(f"select count(*) from {copy}").fetchone()[0] == rows, table
        schema, name = table.split(".")
        columns = ", ".join(
            c
            for (c,) in warehouse.execute(
                "select column_name from information_schema.columns where table_schema = %s and table_name = %s"
                " and column_name <> '_built_at' order by ordinal_position",
                (schema, name),
            )
        )
        differences = warehouse.execute(
            f"(select {columns} from {copy} except all select {columns} from {table})"
            f" union all (select {columns} from {table} except all select {columns} from {copy}) limit 5"
        ).fetchall()
        assert differences == [], f"{table}: {differences}"


D1, D2, D3, D4 = (date(2026, 11, d) for d in (10, 11, 12, 13))


def modify(crm, customer_id: int, modified: datetime, **values) -> None:
    """Overwrite a customer's row in the CRM, as the application does."""
    assignments = ", ".join(f"{column} = %s" for column in values)
    crm.execute(
        f"update dbo.customer_profile set {assignments}, last_modified_ts = %s where customer_id = %s",
        [*values.values(), modified, customer_id],
    )


def test_customer_models_built_day_by_day_equal_a_full_refresh(definitions, source, warehouse):
    source.execute(customer_sample.DDL)
    for cid in (1, 2, 3, 4):
        add_customer(source, cid, datetime(2026, 11, 10, 8 + cid), email=f"c{cid}@example.com")
    assert run_job(definitions, D1).success

    # D2: an email change; a change silver cleans away (same hash_diff: no new SCD2 version); a new
    # customer; and a D1 change committed on the source after D1 was loaded (D2's lookback reads it).
    modify(source, 1, datetime(2026, 11, 11, 9), email="new1@example.com")
    modify(source, 2, datetime(2026, 11, 11, 9), first_name="  ANN")
    add_customer(source, 5, datetime(2026, 11, 11, 10), email="c5@example.com", phone="n/a")
    modify(source, 3, datetime(2026, 11, 10, 23), loyalty_tier="platinum")
    assert run_job(definitions, D2).success

    # D3: customer 1 changes back (A -> B -> A is three versions), customer 4 loses both channels.
    modify(source, 1, datetime(2026, 11, 12, 9), email="c1@example.com")
    modify(source, 4, datetime(2026, 11, 12, 9), email="nobody", phone="none")
    assert run_job(definitions, D3).success

    # Out of order: D2's row of customer 5 is rewritten without moving last_modified_ts (bronze
    # keeps both versions, the later load wins), and D2 is re-run after D3; then D4, and a range.
    modify(source, 5, datetime(2026, 11, 11, 10), loyalty_tier="silver", email="c5@example.com")
    assert run_job(definitions, D2).success
    modify(source, 2, datetime(2026, 11, 13, 8), city="Boston")
    assert run_job(definitions, D4).success
    assert run_job(definitions, D1, D4).success

    versions = warehouse.execute("select count(*) from gold.dim_customer_profile where customer_id = 1").fetchone()
    assert versions == (3,)
    assert_incremental_equals_full_refresh(warehouse, CUSTOMER_MODELS)


def test_web_traffic_built_file_by_file_equals_a_full_refresh(weblogs, definitions, warehouse):
    instance = dg.DagsterInstance.ephemeral()
    day = datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
    # Two files sharing a day, then the first re-uploaded with other lines (a later hour).
    for name, log in (
        ("a.log", access_log(300, day)),
        ("b.log", access_log(300, day + timedelta(hours=20))),
        ("a.log", access_log(120, day + timedelta(hours=3))),
    ):
        weblogs.put(f"incoming/2026-11-23/{name}", log)
        assert ingest_log(definitions, f"2026-11-23/{name}", instance=instance, whole_job=True).success

    assert warehouse.execute("select count(distinct request_date) from gold.web_traffic_daily").fetchone() == (2,)
    assert_incremental_equals_full_refresh(warehouse, WEB_MODELS)


def test_softcart_star_schema_built_sync_by_sync_equals_a_full_refresh(definitions, softcart_db, warehouse):
    start = datetime(2025, 11, 20)
    seed_reference_data(softcart_db, customers=40)
    insert_sales(softcart_db, sales_rows(120, start, start + timedelta(days=40), customers=40, bad_every=15))
    insert_sales(softcart_db, [(101, 9999, 1, Decimal("24.99"), datetime(2026, 1, 5, 10))])  # unknown customer
    assert sync_softcart(definitions).success

    # New sales; a product moved to another category (its old sales move with it, in old months);
    # a customer who moved country; the unknown customer appears.
    insert_sales(
        softcart_db, sales_rows(30, start + timedelta(days=41), start + timedelta(days=50), customers=40, seed=3)
    )
    cursor = softcart_db.cursor()
    cursor.execute("update products set category = 'Books' where product_id = 101")
    cursor.execute("update customers set country = 'France' where customer_id = 7")
    cursor.execute("insert into customers (customer_id, country) values (9999, 'Germany')")
    assert sync_softcart(definitions).success
    insert_sales(
        softcart_db, sales_rows(10, start + timedelta(days=51), start + timedelta(days=52), customers=40, seed=4)
    )
    assert sync_softcart(definitions).success

    assert warehouse.execute(
        "select count(distinct category) from silver.softcart_sales where product_id = 101"
    ).fetchone() == (1,)
    assert_incremental_equals_full_refresh(warehouse, SOFTCART_MODELS)


def test_every_incremental_model_is_compared_with_a_full_refresh():
    manifest = json.loads(DBT_PROJECT.manifest_path.read_text())
    incremental = {
        f"{node['schema']}.{node['alias']}"
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["config"]["materialized"] == "incremental"
    }
    assert incremental == set(COVERED)
    tests = {name for name in globals() if name.startswith("test_")}
    assert set(COVERED.values()) <= tests


@pytest.fixture(autouse=True)
def _manifest(server):
    """The session's parsed manifest (the `server` fixture prepares it)."""
