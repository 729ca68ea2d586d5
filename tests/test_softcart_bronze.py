"""SoftCart bronze on the real MariaDB and MariaDB ODBC driver: sales_data incremental by rowid,
append-only and exactly once; the reference snapshots; the checks that must be able to fail."""

import threading
from datetime import datetime, timedelta
from decimal import Decimal

import dagster as dg
import pytest

from dw_platform.defs.softcart.checks import softcart_sales_data_no_data_lost
from dw_platform.defs.softcart.ingest import SALES_DATA
from dw_platform.defs.softcart.resources import softcart_source
from dw_platform.samples.softcart import insert_sales, sales_rows, seed_reference_data

pytestmark = pytest.mark.integration

BRONZE = [dg.AssetKey(["bronze", n]) for n in ("softcart_sales_data", "softcart_products", "softcart_customers")]
START = datetime(2026, 1, 1)


def materialize(definitions: dg.Definitions, *keys: dg.AssetKey, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    job = definitions.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), asset_selection=list(keys or BRONZE),
                                  raise_on_error=raise_on_error)


def sales_meta(result: dg.ExecuteInProcessResult) -> dict:
    event = next(e for e in result.get_asset_materialization_events()
                 if e.materialization.asset_key == BRONZE[0])
    return {k: v.value for k, v in event.materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def bronze_rowids(warehouse) -> list[int]:
    return [r[0] for r in warehouse.execute("select rowid from bronze.softcart_sales_data order by rowid")]


def test_each_run_loads_only_rows_above_the_highest_rowid_in_bronze_and_a_rerun_loads_nothing(
        definitions, softcart_db, warehouse):
    seed_reference_data(softcart_db, customers=50)
    insert_sales(softcart_db, sales_rows(120, START, START + timedelta(days=30), customers=50))

    first = materialize(definitions)
    assert sales_meta(first)["dagster/row_count"] == 120
    assert (sales_meta(first)["first_rowid"], sales_meta(first)["last_rowid"]) == (1, 120)
    assert all(checks(first).values()), checks(first)

    insert_sales(softcart_db, sales_rows(7, START + timedelta(days=31), START + timedelta(days=32), seed=2))
    second = materialize(definitions, BRONZE[0])
    meta = sales_meta(second)
    assert (meta["rowid_before"], meta["dagster/row_count"], meta["first_rowid"], meta["last_rowid"]) == (120, 7, 121, 127)
    assert bronze_rowids(warehouse) == list(range(1, 128))

    third = materialize(definitions, BRONZE[0])
    assert sales_meta(third)["dagster/row_count"] == 0
    assert bronze_rowids(warehouse) == list(range(1, 128))

    # Ledger: one entry per load with the rowid range; the watermark holds the rowid.
    ledger = warehouse.execute(
        "select rows_loaded, first_id, last_id, status from bronze.batch_ledger"
        " where target_table = 'bronze.softcart_sales_data' order by started_at").fetchall()
    assert ledger == [(120, 1, 120, "succeeded"), (7, 121, 127, "succeeded"), (0, None, None, "succeeded")]
    assert warehouse.execute("select last_watermark_id from bronze.etl_watermarks"
                             " where watermark_key = 'softcart.sales_data'").fetchone()[0] == 127


def test_a_backlog_is_read_in_rowid_pages_across_gaps_as_one_load(definitions, softcart_db, warehouse, monkeypatch):
    from dw_platform.defs.softcart import assets

    monkeypatch.setattr(assets, "PAGE_ROWIDS", 7)  # the driver holds a whole result: pages bound memory
    insert_sales(softcart_db, sales_rows(60, START, START + timedelta(days=1)))
    softcart_db.cursor().execute("delete from sales_data where rowid between 10 and 40")  # a gap wider than a page

    meta = sales_meta(materialize(definitions, BRONZE[0]))

    assert (meta["dagster/row_count"], meta["first_rowid"], meta["last_rowid"]) == (29, 1, 60)
    assert bronze_rowids(warehouse) == [*range(1, 10), *range(41, 61)]
    assert warehouse.execute("select count(distinct _bronze_batch_id) from bronze.softcart_sales_data").fetchone()[0] == 1


def test_rows_land_as_the_source_holds_them_with_lineage(definitions, softcart_db, warehouse):
    insert_sales(softcart_db, [(101, 1, 3, Decimal("24.99"), datetime(2026, 3, 1, 12, 30, 5)),
                               (9999, 2, -1, Decimal("0.00"), None)])
    materialize(definitions, BRONZE[0])
    rows = warehouse.execute(
        'select rowid, product_id, customer_id, quantity, price, "timestamp", _bronze_source_file,'
        " _bronze_batch_id is not null, _bronze_row_hash is not null from bronze.softcart_sales_data order by rowid"
    ).fetchall()
    assert rows == [
        (1, 101, 1, 3, Decimal("24.99"), datetime(2026, 3, 1, 12, 30, 5), "softcart:sales_data", True, True),
        (2, 9999, 2, -1, Decimal("0.00"), None, "softcart:sales_data", True, True),
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


def test_the_no_data_lost_check_fails_when_bronze_is_missing_a_row(definitions, softcart_db, warehouse,
                                                                  warehouse_resource):
    insert_sales(softcart_db, sales_rows(50, START, START + timedelta(days=1)))
    assert checks(materialize(definitions, BRONZE[0]))["softcart_sales_data_no_data_lost"]

    warehouse.execute("delete from bronze.softcart_sales_data where rowid = 17")  # a row lost in bronze
    resources = {"warehouse": warehouse_resource,
                 "softcart_source": softcart_source().process_config_and_initialize()}

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
    versions = warehouse.execute("select country from bronze.softcart_customers where customer_id = 3"
                                 " order by _bronze_load_ts").fetchall()
    assert versions[-1] == ("Japan",) and len(versions) == 2


def test_an_unreachable_source_fails_with_a_clear_message_and_a_failed_ledger_entry(definitions, softcart_db,
                                                                                    warehouse, monkeypatch):
    monkeypatch.setenv("DW_SOFTCART_ODBC", "Driver={MariaDB Unicode};Socket=/nonexistent/mysqld.sock;User=root")
    result = materialize(definitions, BRONZE[0], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "cannot connect to softcart over ODBC" in failure.step_failure_data.user_failure_data.description
    assert warehouse.execute("select status from bronze.batch_ledger where target_table = %s",
                             (SALES_DATA.qualified_name,)).fetchone() == ("failed",)
