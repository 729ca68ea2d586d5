"""Versioned migrations (dw_platform/migrations/): each applied once and recorded, a warehouse of
an earlier release upgraded in place keeping its rows, a failed one leaving nothing behind."""

import threading

import pytest
from conftest import warehouse_from_env

from dw_platform.lib import migrations


def recorded(conn) -> list[tuple[int, str]]:
    return conn.execute("select id, name from bronze.schema_migrations order by id").fetchall()


def exists(conn, relation: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (relation,)).fetchone()[0]


def columns(conn, schema: str, table: str) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s",
            (schema, table),
        )
    }


def test_a_fresh_warehouse_gets_every_migration_once_and_a_second_run_applies_none(warehouse):
    every = migrations.available()
    assert [m.id for m in every] == list(range(1, len(every) + 1))  # numbered without gaps

    assert migrations.migrate(warehouse) == list(every)

    assert recorded(warehouse) == [(m.id, m.name) for m in every]
    for relation in (
        "bronze.batch_ledger",
        "bronze.etl_watermarks",
        "bronze.shape_migrations",
        "bronze.partition_loads",
        "bronze.sales_quarantine",
        "bronze.video_quarantine",
        "bronze.video_schema_changes",
        "bronze.web_access_log_quarantine",
        "bronze.cdc_events",
        "bronze.cdc_capture",
    ):
        assert exists(warehouse, relation), relation
    assert migrations.migrate(warehouse) == []
    assert len(recorded(warehouse)) == len(every)


def test_sessions_migrating_at_once_apply_each_migration_once(warehouse):
    applied, errors = [], []

    def migrate():
        try:
            with warehouse_from_env().connect() as conn:
                applied.extend(m.id for m in migrations.migrate(conn))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    assert sorted(applied) == [m.id for m in migrations.available()]
    assert [r[0] for r in recorded(warehouse)] == sorted(applied)


def test_a_warehouse_of_the_earlier_shape_is_upgraded_keeping_its_rows(warehouse):
    # What a warehouse of a release before migrations held: a ledger and watermark table without
    # the later columns, a quarantine without raw_bytes, typed bronze.sales, and the dbt relations
    # under their old names (the incremental fact with its history, a view built on it).
    warehouse.execute(
        """
        create schema bronze; create schema silver; create schema gold;
        create table bronze.batch_ledger (
            batch_id uuid primary key, asset_key text not null, target_table text not null,
            partition_key text not null, source text not null, window_start timestamptz, window_end timestamptz,
            rows_loaded bigint not null default 0, rows_replaced bigint not null default 0,
            status text not null constraint batch_ledger_status_check check (status in ('succeeded', 'failed')),
            error text, dagster_run_id text, started_at timestamptz not null, finished_at timestamptz not null);
        insert into bronze.batch_ledger values (gen_random_uuid(), 'bronze/sales', 'bronze.sales', 'a.csv',
            'incoming/a.csv', null, null, 2, 0, 'succeeded', null, null, now(), now());
        create table bronze.etl_watermarks (watermark_key text primary key, last_watermark_ts timestamp,
            last_run_ts timestamptz not null, records_extracted bigint not null);
        insert into bronze.etl_watermarks values ('customer', '2026-01-01', now(), 7);
        create table bronze.video_quarantine (source_file text not null, arrival_date date not null,
            line_number bigint not null, raw text not null, reason text not null,
            _bronze_load_ts timestamptz not null, _bronze_batch_id uuid not null);
        create table bronze.sales (order_id text, order_date date, quantity bigint, unit_price numeric,
            total_amount numeric, source_line bigint, _bronze_load_ts timestamptz, _bronze_batch_id uuid,
            _bronze_source_file text);
        insert into bronze.sales values ('SO-1', '2026-11-20', 3, 2.50, 7.50, 2, now(), gen_random_uuid(), 'a.csv');
        create table gold.fact_sales (order_id bigint, amount numeric);
        insert into gold.fact_sales values (1, 10), (2, 20);
        create table gold.dim_date (date_key integer);
        create table gold.dim_country (country_key integer);
        create table gold.dim_category (category_key integer);
        create view gold.softcart_sales_summary as select sum(amount) as revenue from gold.fact_sales;
        create table silver.country_aliases (country_alias text, country_code text, country_name text);
        insert into silver.country_aliases values ('deutschland', 'DE', 'Germany');
        create table silver.country_dial_codes (country_code text, dial_code text);
        """
    )

    migrations.migrate(warehouse)

    assert len(recorded(warehouse)) == len(migrations.available())
    assert {"rows_read", "backend_pid", "backend_start", "content_sha256"} <= columns(
        warehouse, "bronze", "batch_ledger"
    )
    assert warehouse.execute("select count(*), min(rows_read) from bronze.batch_ledger").fetchone() == (1, 0)
    warehouse.execute(  # the statuses and open entries of the current loader
        "insert into bronze.batch_ledger (batch_id, asset_key, target_table, partition_key, source, status,"
        " started_at) values (gen_random_uuid(), 'bronze/sales', 'bronze.sales', 'b.csv', 'b', 'running', now())"
    )
    assert {"last_watermark_id", "last_partition_key"} <= columns(warehouse, "bronze", "etl_watermarks")
    assert warehouse.execute("select records_extracted from bronze.etl_watermarks").fetchone() == (7,)
    assert "raw_bytes" in columns(warehouse, "bronze", "video_quarantine")
    assert warehouse.execute("select order_date, quantity, unit_price from bronze.sales").fetchone() == (
        "2026-11-20",
        "3",
        "2.50",
    )
    assert "total_amount" not in columns(warehouse, "bronze", "sales")

    for old in ("gold.fact_sales", "gold.dim_date", "silver.country_aliases", "silver.country_dial_codes"):
        assert not exists(warehouse, old), old
    assert warehouse.execute("select count(*) from gold.softcart_fact_sales").fetchone() == (2,)
    assert exists(warehouse, "gold.softcart_dim_country") and exists(warehouse, "gold.softcart_dim_category")
    assert warehouse.execute("select revenue from gold.softcart_sales_summary").fetchone() == (30,)
    assert warehouse.execute("select country_code from silver.customer_country_aliases").fetchone() == ("DE",)
    assert migrations.migrate(warehouse) == []


def test_an_old_relation_beside_the_new_one_is_dropped(warehouse):
    # dbt was run by hand under the new names before the migration: the old table goes.
    warehouse.execute(
        "create schema gold; create table gold.fact_sales (order_id bigint);"
        " create table gold.softcart_fact_sales (order_id bigint); insert into gold.softcart_fact_sales values (1)"
    )

    migrations.migrate(warehouse)

    assert not exists(warehouse, "gold.fact_sales")
    assert warehouse.execute("select count(*) from gold.softcart_fact_sales").fetchone() == (1,)


def test_a_failed_migration_leaves_nothing_of_itself_and_is_named(warehouse, tmp_path):
    (tmp_path / "9001_first.sql").write_text("create table public.first (x integer);")
    (tmp_path / "9002_broken.sql").write_text("create table public.second (x integer); select 1 / 0;")
    folder = migrations.available(tmp_path)

    with pytest.raises(migrations.MigrationError, match="9002_broken.sql failed, nothing of it was applied") as err:
        migrations.migrate(warehouse, folder)

    assert not err.value.transient
    assert exists(warehouse, "public.first") and not exists(warehouse, "public.second")
    assert recorded(warehouse) == [(9001, "first")]


def test_misnamed_or_twice_numbered_migrations_are_refused(tmp_path):
    (tmp_path / "1_short.sql").write_text("select 1;")
    with pytest.raises(ValueError, match="NNNN_<what_it_does>.sql"):
        migrations.available(tmp_path)

    (tmp_path / "1_short.sql").unlink()
    (tmp_path / "0001_one.sql").write_text("select 1;")
    (tmp_path / "0001_other.sql").write_text("select 1;")
    with pytest.raises(ValueError, match="share a number: 0001_one.sql, 0001_other.sql"):
        migrations.available(tmp_path)
