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
from test_video_pipeline import (  # noqa: F401
    CONTENT,
    SESSIONS_DAY1,
    SESSIONS_DAY2,
    USERS_DAY1,
    USERS_DAY2,
    land,
    landing,  # noqa: F401
)
from test_video_pipeline import run as run_video_day

from dw_platform.defs.sales.partitions import sales_blobs
from dw_platform.lib.dbt import ALL_TIME, DBT_PROJECT
from dw_platform.samples import customer as customer_sample
from dw_platform.samples import sales as sales_sample
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
SALES_MODELS = ["silver.sales_cleaned", "gold.sales_daily_summary"]
VIDEO_MODELS = [
    "silver.video_users",
    "silver.video_viewing_sessions",
    "silver.video_content",
    "silver.video_content_genres",
    "gold.video_user_engagement",
    "gold.video_viewing_statistics",
]
# Every incremental model of the project, with the test that compares it with a full refresh.
COVERED = {
    **dict.fromkeys(CUSTOMER_MODELS, "test_customer_models_built_day_by_day_equal_a_full_refresh"),
    **dict.fromkeys(WEB_MODELS, "test_web_traffic_built_file_by_file_equals_a_full_refresh"),
    **dict.fromkeys(SOFTCART_MODELS, "test_softcart_star_schema_built_sync_by_sync_equals_a_full_refresh"),
    **dict.fromkeys(SALES_MODELS, "test_sales_built_blob_by_blob_equals_a_full_refresh"),
    **dict.fromkeys(VIDEO_MODELS, "test_video_built_day_by_day_and_by_range_equals_a_full_refresh"),
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


def test_sales_built_blob_by_blob_equals_a_full_refresh(storage, warehouse):
    from dw_platform.definitions import defs  # after the storage fixture named the container

    day = date(2026, 11, 20)
    instance = dg.DagsterInstance.ephemeral()
    job = defs().resolve_job_def("sales_ingest")

    def ingest_blob(name: str, rows: list[list[str]]) -> None:
        storage.upload(f"incoming/{name}", sales_sample.to_csv(sales_sample.HEADER, rows))
        instance.add_dynamic_partitions(sales_blobs.name, [name])
        assert job.execute_in_process(instance=instance, partition_key=name, raise_on_error=False).success

    a = list(sales_sample.rows(20, day))
    ingest_blob("a.csv", a)
    # b.csv: new orders; a correction of a.csv's order 5 (the latest load wins), with spaces
    # around its id (silver's key is the trimmed id); a correction of order 6 to another day.
    corrected = [" " + a[4][0] + " ", *a[4][1:7], "5", *a[4][8:]]
    moved = [a[5][0], (day + timedelta(days=3)).isoformat(), *a[5][2:]]
    ingest_blob("b.csv", [*sales_sample.rows(10, day, seed=5, first_id=101), corrected, moved])
    # a.csv sent again: orders 15-20 gone (their days lose them), order 3 on a new day; its
    # order 5 and 6 are now the latest again.
    again = [r if r[0] != a[2][0] else [r[0], (day + timedelta(days=5)).isoformat(), *r[2:]] for r in a[:14]]
    ingest_blob("a.csv", again)
    ingest_blob("c.csv", list(sales_sample.rows(5, day + timedelta(days=1), seed=9, first_id=201)))

    assert warehouse.execute("select count(*) from silver.sales_cleaned").fetchone() == (14 + 10 + 5,)
    assert warehouse.execute(
        "select source_blob like '%%a.csv' from silver.sales_cleaned where order_id = %s", (a[4][0],)
    ).fetchone() == (True,)
    assert_incremental_equals_full_refresh(warehouse, SALES_MODELS)


def run_video_range(first: str, last: str) -> dg.ExecuteInProcessResult:
    """video_daily over first..last as ONE run (a catch-up tick's or `dw backfill video`'s)."""
    from dw_platform.definitions import defs

    return (
        defs()
        .resolve_job_def("video_daily")
        .execute_in_process(
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    )


def test_video_built_day_by_day_and_by_range_equals_a_full_refresh(landing, warehouse):  # noqa: F811
    day1, day2, day3 = "2026-11-20", "2026-11-21", "2026-11-22"
    land(landing, day1, USERS_DAY1, SESSIONS_DAY1)
    # Day 2 corrects S1 to the day before (its day 1 row moves to 2026-11-19); the catalog renames
    # C2 and changes its genres. Day 3's catalog no longer lists C3 (it keeps its last version).
    moved = ["S1", "U1", "C1", "mobile", "US", "2026-11-19 23:00:00", "660", "100"]
    renamed = [{**CONTENT[0]}, {**CONTENT[1], "title": "Beta II", "genres": ["Comedy", "Drama"]}, CONTENT[2]]
    land(landing, day2, USERS_DAY2, [*SESSIONS_DAY2[:1], moved], content=renamed)
    land(
        landing,
        day3,
        [["U4", "dee@example.com", "fr", "free", "2026-11-22", "2026-11-22T01:00:00+00:00"]],
        [
            ["S5", "U4", "C3", "tablet", "fr", "2026-11-22 08:00:00", "120", "20"],
            ["S6", "U2", "C1", "tv", "de", "2026-11-20 21:00:00", "30", "5"],
        ],
        content=renamed[:2],
    )
    s1_day = "select session_date from silver.video_viewing_sessions where session_id = 'S1'"
    u3_built = "select _built_at from silver.video_users where user_id = 'U3'"
    assert run_video_day(day1).success
    before = warehouse.execute(u3_built).fetchone()
    # Days 2 and 3 as one range run: one windowed build, which leaves day 1's user U3 alone.
    assert run_video_range(day2, day3).success
    assert warehouse.execute(u3_built).fetchone() == before
    assert warehouse.execute(s1_day).fetchone() == (date(2026, 11, 19),)
    assert warehouse.execute("select title from silver.video_content where content_id = 'C2'").fetchone() == (
        "Beta II",
    )
    # Day 1 sent again after day 3: S3 and U3 gone (S3's day loses it); its S1 is now the latest
    # load and moves back (2026-11-19 loses it); U2's day 1 row stays older than day 2's.
    land(landing, day1, USERS_DAY1[:2] + USERS_DAY1[3:], SESSIONS_DAY1[:2])
    assert run_video_day(day1).success
    # Day 2 sent again with C2 back to its first version; day 2 and 3 run again as a range.
    land(landing, day2, USERS_DAY2, [*SESSIONS_DAY2[:1], moved])
    assert run_video_range(day2, day3).success

    assert warehouse.execute("select count(*) from silver.video_viewing_sessions").fetchone() == (5,)
    assert warehouse.execute("select count(*) from silver.video_users").fetchone() == (3,)
    assert warehouse.execute("select count(*) from silver.video_content").fetchone() == (3,)
    assert warehouse.execute(
        "select content_id, title, arrival_date::text from silver.video_content order by 1"
    ).fetchall() == [("C1", "Alpha", day3), ("C2", "Beta II", day3), ("C3", "Gamma", day2)]
    assert_incremental_equals_full_refresh(warehouse, VIDEO_MODELS)


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
