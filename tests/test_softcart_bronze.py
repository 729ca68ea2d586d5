"""SoftCart bronze on the real MariaDB and MariaDB ODBC driver: sales_data incremental by rowid,
append-only and exactly once; the reference snapshots; the checks that must be able to fail."""

import threading
from datetime import datetime, timedelta
from decimal import Decimal

import dagster as dg
import pytest

from dw_platform.defs.softcart.checks import softcart_sales_data_no_data_lost
from dw_platform.defs.softcart.resources import softcart_source
from dw_platform.lib import bronze
from dw_platform.samples.softcart import insert_sales, sales_rows, seed_reference_data
from dw_platform.softcart.ingest import SALES_DATA

pytestmark = pytest.mark.integration

BRONZE = [dg.AssetKey(["bronze", n]) for n in ("softcart_sales_data", "softcart_products", "softcart_customers")]
START = datetime(2026, 1, 1)


def materialize(
    definitions: dg.Definitions, *keys: dg.AssetKey, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    job = definitions.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=list(keys or BRONZE), raise_on_error=raise_on_error
    )


def sales_meta(result: dg.ExecuteInProcessResult) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.materialization.asset_key == BRONZE[0])
    return {k: v.value for k, v in event.materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def bronze_rowids(warehouse) -> list[int]:
    return [r[0] for r in warehouse.execute("select rowid from bronze.softcart_sales_data order by rowid")]


def test_each_run_loads_only_rows_above_the_highest_rowid_in_bronze_and_a_rerun_loads_nothing(
    definitions, softcart_db, warehouse
):
    seed_reference_data(softcart_db, customers=50)
    insert_sales(softcart_db, sales_rows(120, START, START + timedelta(days=30), customers=50))

    first = materialize(definitions)
    assert sales_meta(first)["dagster/row_count"] == 120
    assert (sales_meta(first)["first_rowid"], sales_meta(first)["last_rowid"]) == (1, 120)
    assert all(checks(first).values()), checks(first)

    insert_sales(softcart_db, sales_rows(7, START + timedelta(days=31), START + timedelta(days=32), seed=2))
    second = materialize(definitions, BRONZE[0])
    meta = sales_meta(second)
    assert (meta["rowid_before"], meta["dagster/row_count"], meta["first_rowid"], meta["last_rowid"]) == (
        120,
        7,
        121,
        127,
    )
    assert bronze_rowids(warehouse) == list(range(1, 128))

    third = materialize(definitions, BRONZE[0])
    assert sales_meta(third)["dagster/row_count"] == 0
    assert bronze_rowids(warehouse) == list(range(1, 128))

    # Ledger: one entry per load with the rowid range; the watermark holds the rowid.
    ledger = warehouse.execute(
        "select rows_loaded, first_id, last_id, status from bronze.batch_ledger"
        " where target_table = 'bronze.softcart_sales_data' order by started_at"
    ).fetchall()
    assert ledger == [(120, 1, 120, "succeeded"), (7, 121, 127, "succeeded"), (0, None, None, "succeeded")]
    assert (
        warehouse.execute(
            "select last_watermark_id from bronze.etl_watermarks where watermark_key = 'softcart.sales_data'"
        ).fetchone()[0]
        == 127
    )


def test_a_backlog_is_read_in_keyset_pages_across_gaps_as_one_load(definitions, softcart_db, warehouse, monkeypatch):
    from dw_platform.defs.softcart import assets

    monkeypatch.setattr(assets, "PAGE_ROWS", 7)  # the driver holds a whole result: pages bound memory
    insert_sales(softcart_db, sales_rows(60, START, START + timedelta(days=1)))
    softcart_db.cursor().execute("delete from sales_data where rowid between 10 and 40")  # a gap wider than a page

    meta = sales_meta(materialize(definitions, BRONZE[0]))

    assert (meta["dagster/row_count"], meta["first_rowid"], meta["last_rowid"]) == (29, 1, 60)
    assert bronze_rowids(warehouse) == [*range(1, 10), *range(41, 61)]
    assert (
        warehouse.execute("select count(distinct _bronze_batch_id) from bronze.softcart_sales_data").fetchone()[0] == 1
    )


def test_rows_land_as_the_source_holds_them_with_lineage(definitions, softcart_db, warehouse):
    insert_sales(
        softcart_db,
        [(101, 1, 3, Decimal("24.99"), datetime(2026, 3, 1, 12, 30, 5)), (9999, 2, -1, Decimal("0.00"), None)],
    )
    materialize(definitions, BRONZE[0])
    rows = warehouse.execute(
        'select rowid, product_id, customer_id, quantity, price, "timestamp", _bronze_source_file,'
        " _bronze_batch_id is not null, _bronze_load_ts is not null from bronze.softcart_sales_data order by rowid"
    ).fetchall()
    assert rows == [
        (1, 101, 1, 3, Decimal("24.99"), datetime(2026, 3, 1, 12, 30, 5), "softcart:sales_data", True, True),
        (2, 9999, 2, -1, Decimal("0.00"), None, "softcart:sales_data", True, True),
    ]


def test_prices_and_times_land_exactly_through_the_arrow_reader(definitions, softcart_db, warehouse):
    softcart_db.cursor().execute("alter table sales_data modify `timestamp` datetime(6)")
    # As SQL text: pyodbc's parameters lose the microseconds on the way in.
    softcart_db.cursor().execute(
        "insert into sales_data (product_id, customer_id, quantity, price, `timestamp`) values"
        " (1, 1, 1, -12345678.99, '1999-12-31 23:59:59.999999'), (2, 2, 0, 99999999.99, '2000-01-01 00:00:00'),"
        " (3, null, 2, 0.01, '1970-01-01 00:00:00.000001'), (4, 4, 4, null, '2038-01-19 03:14:08.5'),"
        " (null, 5, null, 10000.00, null)"
    )
    materialize(definitions, BRONZE[0])
    assert warehouse.execute(
        'select product_id, customer_id, quantity, price, "timestamp" from bronze.softcart_sales_data order by rowid'
    ).fetchall() == [
        (1, 1, 1, Decimal("-12345678.99"), datetime(1999, 12, 31, 23, 59, 59, 999999)),
        (2, 2, 0, Decimal("99999999.99"), datetime(2000, 1, 1)),
        (3, None, 2, Decimal("0.01"), datetime(1970, 1, 1, 0, 0, 0, 1)),
        (4, 4, 4, None, datetime(2038, 1, 19, 3, 14, 8, 500000)),
        (None, 5, None, Decimal("10000.00"), None),
    ]


def test_bronze_appends_by_rowid_with_a_unique_index_and_no_row_hash(definitions, softcart_db, warehouse):
    insert_sales(softcart_db, sales_rows(5, START, START + timedelta(days=1)))
    materialize(definitions, BRONZE[0])
    columns = [
        r[0]
        for r in warehouse.execute(
            "select column_name from information_schema.columns where table_schema = 'bronze'"
            " and table_name = 'softcart_sales_data' order by ordinal_position"
        )
    ]
    assert columns == [c.name for c in SALES_DATA.all_columns] and "_bronze_row_hash" not in columns
    assert warehouse.execute("select indexdef from pg_indexes where tablename = 'softcart_sales_data'").fetchall() == [
        ("CREATE UNIQUE INDEX softcart_sales_data_rowid_key ON bronze.softcart_sales_data USING btree (rowid)",)
    ]


def test_a_load_that_would_add_a_rowid_bronze_holds_fails_whole(softcart_db, warehouse):
    from dw_platform.defs.softcart.assets import get_latest_records, table_scope

    insert_sales(softcart_db, sales_rows(30, START, START + timedelta(days=1)))
    source = softcart_source().process_config_and_initialize()

    def load(rows):
        return bronze.load(
            warehouse,
            SALES_DATA,
            rows,
            asset_key="bronze/softcart_sales_data",
            scope=table_scope(),
            source="softcart:sales_data",
        )

    assert load(lambda _conn: get_latest_records(source, 20)).rows_loaded == 10
    with pytest.raises(dg.Failure, match="duplicate key value violates unique constraint") as failure:
        load(lambda _conn: get_latest_records(source, 0))  # reads 1..30 although 21..30 are in bronze
    assert "nothing was committed" in str(failure.value)
    assert bronze_rowids(warehouse) == list(range(21, 31))


def test_a_reader_killed_mid_read_loads_nothing_and_the_next_run_loads_every_row(
    definitions, softcart_db, warehouse, monkeypatch
):
    import psutil

    from dw_platform.defs.softcart import assets

    # More small frames than the pipe and the prefetch queue hold: the reader is still running.
    insert_sales(softcart_db, sales_rows(5000, START, START + timedelta(days=2)))
    monkeypatch.setattr(assets, "PAGE_ROWS", 500)
    real = assets.get_latest_records

    def killed_after_the_first_batch(source, last_rowid):
        batches = real(source.model_copy(update={"fetch_size": 20}), last_rowid)
        yield next(batches)
        for child in psutil.Process().children():
            if "dw_platform.lib.odbc_reader" in " ".join(child.cmdline()):
                child.kill()  # what a driver crash looks like from the parent
        yield from batches

    monkeypatch.setattr(assets, "get_latest_records", killed_after_the_first_batch)
    failed = materialize(definitions, BRONZE[0], raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert "ODBC reader of softcart died" in failure.step_failure_data.user_failure_data.description
    assert bronze_rowids(warehouse) == []
    assert warehouse.execute("select status from bronze.batch_ledger").fetchall() == [("failed",)]

    monkeypatch.setattr(assets, "get_latest_records", real)
    assert sales_meta(materialize(definitions, BRONZE[0]))["dagster/row_count"] == 5000
    assert bronze_rowids(warehouse) == list(range(1, 5001))


def test_a_table_that_kept_versions_by_row_hash_is_migrated_keeping_its_rows(definitions, softcart_db, warehouse):
    from dataclasses import replace

    from dw_platform.defs.softcart.assets import get_latest_records, table_scope

    insert_sales(softcart_db, sales_rows(30, START, START + timedelta(days=1)))
    source = softcart_source().process_config_and_initialize()
    old = replace(SALES_DATA, append_key=None, version_key=("rowid",), index_columns=("rowid",))
    before = bronze.load(
        warehouse,
        old,
        lambda _conn: get_latest_records(source, 0),
        asset_key="bronze/softcart_sales_data",
        scope=table_scope(),
        source="softcart:sales_data",
    )
    kept = warehouse.execute(
        "select rowid, price, _bronze_batch_id from bronze.softcart_sales_data order by rowid"
    ).fetchall()
    assert (
        before.rows_loaded == 30
        and warehouse.execute(
            "select count(*) from bronze.softcart_sales_data where _bronze_row_hash is not null"
        ).fetchone()[0]
        == 30
    )

    insert_sales(softcart_db, sales_rows(5, START + timedelta(days=2), START + timedelta(days=3), seed=2))
    meta = sales_meta(materialize(definitions, BRONZE[0]))

    assert (meta["rowid_before"], meta["dagster/row_count"]) == (30, 5)
    assert (
        warehouse.execute(
            "select rowid, price, _bronze_batch_id from bronze.softcart_sales_data where rowid <= 30 order by rowid"
        ).fetchall()
        == kept
    )
    assert warehouse.execute("select indexname from pg_indexes where tablename = 'softcart_sales_data'").fetchall() == [
        ("softcart_sales_data_rowid_key",)
    ]


def test_two_concurrent_runs_load_each_rowid_once(definitions, softcart_db, warehouse):
    insert_sales(softcart_db, sales_rows(3000, START, START + timedelta(days=5)))
    results = []

    def run():
        results.append(materialize(definitions, BRONZE[0]))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    loaded = sorted(sales_meta(r)["dagster/row_count"] for r in results)
    assert loaded == [0, 3000]  # the second waited for the first's lock, then found nothing new
    assert bronze_rowids(warehouse) == list(range(1, 3001))


def test_the_no_data_lost_check_fails_when_bronze_is_missing_a_row(
    definitions, softcart_db, warehouse, warehouse_resource
):
    insert_sales(softcart_db, sales_rows(50, START, START + timedelta(days=1)))
    assert checks(materialize(definitions, BRONZE[0]))["softcart_sales_data_no_data_lost"]

    warehouse.execute("delete from bronze.softcart_sales_data where rowid = 17")  # a row lost in bronze
    resources = {"warehouse": warehouse_resource, "softcart_source": softcart_source().process_config_and_initialize()}

    result = softcart_sales_data_no_data_lost(**resources)

    assert not result.passed
    assert result.metadata["rows_missing_in_bronze"].value == 1
    assert result.metadata["high_water_rowid"].value == 50


def test_reference_tables_keep_versions_and_a_rerun_adds_nothing(definitions, softcart_db, warehouse):
    seed_reference_data(softcart_db, customers=20)
    materialize(definitions, BRONZE[1], BRONZE[2])
    softcart_db.cursor().execute("update customers set country = 'Japan' where customer_id = 3")
    result = materialize(definitions, BRONZE[1], BRONZE[2])
    assert all(checks(result).values()), checks(result)
    assert warehouse.execute("select count(*) from bronze.softcart_customers").fetchone()[0] == 21
    assert warehouse.execute("select count(*) from bronze.softcart_products").fetchone()[0] == 18
    versions = warehouse.execute(
        "select country from bronze.softcart_customers where customer_id = 3 order by _bronze_load_ts"
    ).fetchall()
    assert versions[-1] == ("Japan",) and len(versions) == 2


def test_an_unreachable_source_fails_with_a_clear_message_and_a_failed_ledger_entry(
    definitions, softcart_db, warehouse, monkeypatch
):
    monkeypatch.setenv("DW_SOFTCART_ODBC", "Driver={MariaDB Unicode};Socket=/nonexistent/mysqld.sock;User=root")
    result = materialize(definitions, BRONZE[0], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "cannot connect to softcart over ODBC" in failure.step_failure_data.user_failure_data.description
    assert warehouse.execute(
        "select status from bronze.batch_ledger where target_table = %s", (SALES_DATA.qualified_name,)
    ).fetchone() == ("failed",)
