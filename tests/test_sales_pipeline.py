"""The sales domain end to end on a real Azurite and a real PostgreSQL."""

import json
import os
from datetime import date

import dagster as dg
import pytest
import zstandard
from conftest import assert_column_lineage, warehouse_from_env
from cryptography.fernet import Fernet, InvalidToken

from dw_platform.defs.sales.assets import sales
from dw_platform.defs.sales.checks import (
    sales_expected_columns,
    sales_no_all_null_rows,
    sales_no_identical_files,
    sales_rows_reconcile_with_blob,
)
from dw_platform.defs.sales.partitions import sales_blobs
from dw_platform.lib.crypto import Cipher, FernetKeys
from dw_platform.sales.rotation import rotate_keys
from dw_platform.samples import sales as sample

DAY = date(2026, 11, 20)
GOOD = sample.to_csv(sample.HEADER, list(sample.rows(30, DAY)))


def ingest(storage, key: str, keys: str | None = None) -> dg.ExecuteInProcessResult:
    """Materialize bronze/sales (and its checks) for one blob partition."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(sales_blobs.name, [key])
    resources = {
        "warehouse": warehouse_from_env(),
        "sales_storage": storage,
        "sales_keys": FernetKeys(fernet_keys=keys or os.environ["DW_SALES_FERNET_KEYS"]),
    }
    return dg.materialize(
        [sales, sales_expected_columns, sales_no_all_null_rows, sales_rows_reconcile_with_blob],
        partition_key=key,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def names(storage, prefix="") -> list[str]:
    return sorted(b.name for b in storage.list(prefix))


def report(storage, name: str) -> dict:
    return json.loads(b"".join(storage.chunks(storage.version(name))))


def test_an_ingested_file_lands_once_with_lineage_and_moves_to_processed(storage, warehouse):
    storage.upload("incoming/day1/orders.csv", GOOD)

    result = ingest(storage, "day1/orders.csv")

    assert result.success
    assert all(checks(result).values()) and len(checks(result)) == 3, checks(result)
    rows = warehouse.execute(
        "select source_line, order_id, order_date, product, category, region, quantity, unit_price, currency,"
        " _bronze_source_file, _bronze_batch_id from bronze.sales order by source_line"
    ).fetchall()
    expected = list(sample.rows(30, DAY))
    assert [r[1:9] for r in rows] == [(e[0], e[1], *e[4:]) for e in expected]  # the text as sent
    assert [r[0] for r in rows] == list(range(2, 32))
    assert {r[9] for r in rows} == {"incoming/day1/orders.csv"} and len({r[10] for r in rows}) == 1
    ledger = warehouse.execute("select partition_key, rows_loaded, status from bronze.batch_ledger").fetchall()
    assert ledger == [("day1/orders.csv", 30, "succeeded")]
    assert names(storage) == ["processed/day1/orders.csv", "processed/day1/orders.csv.report.json"]
    assert (
        report(storage, "processed/day1/orders.csv.report.json").items()
        >= {"status": "succeeded", "rows_loaded": 30, "rows_quarantined": 0, "data_lines": 30, "error": None}.items()
    )


def test_rerunning_a_partition_replaces_its_rows_instead_of_duplicating(storage, warehouse):
    storage.upload("incoming/orders.csv", GOOD)
    assert ingest(storage, "orders.csv").success

    again = ingest(storage, "orders.csv")  # the blob is in processed/ now

    assert again.success
    assert warehouse.execute("select count(*), count(distinct _bronze_batch_id) from bronze.sales").fetchone() == (
        30,
        1,
    )
    assert warehouse.execute(
        "select rows_loaded, rows_replaced from bronze.batch_ledger order by finished_at"
    ).fetchall() == [(30, 0), (30, 30)]
    assert names(storage, "processed/") == ["processed/orders.csv", "processed/orders.csv.report.json"]


def test_a_changed_upload_reingests_and_replaces_rows_and_quarantine_together(storage, warehouse):
    bad = sample.BAD_ROWS[0][0]
    storage.upload("incoming/orders.csv", sample.to_csv(sample.HEADER, [*sample.rows(5, DAY), bad]))
    assert ingest(storage, "orders.csv").success
    assert warehouse.execute("select count(*) from bronze.sales_quarantine").fetchone()[0] == 1

    storage.upload("incoming/orders.csv", sample.to_csv(sample.HEADER, list(sample.rows(8, DAY, seed=99))))
    assert ingest(storage, "orders.csv").success

    assert warehouse.execute("select count(*) from bronze.sales").fetchone()[0] == 8
    assert warehouse.execute("select count(*) from bronze.sales_quarantine").fetchone()[0] == 0
    assert report(storage, "processed/orders.csv.report.json")["rows_loaded"] == 8


def test_bad_rows_are_quarantined_with_line_and_reason_and_good_rows_still_load(storage, warehouse):
    day_files = sample.sample_files(DAY)
    name = f"{DAY.isoformat()}/orders_with_bad_rows.csv"
    storage.upload("incoming/" + name, day_files[name])

    result = ingest(storage, name)

    assert result.success and all(checks(result).values())
    assert warehouse.execute("select count(*) from bronze.sales").fetchone()[0] == 40
    quarantined = warehouse.execute(
        "select line_number, reason, raw_line_encrypted from bronze.sales_quarantine order by line_number"
    ).fetchall()
    assert [(line, reason) for line, reason, _ in quarantined] == [
        (7, "order_date: '2026-13-45' is not a date (YYYY-MM-DD)"),
        (14, "quantity: 'two' is not an integer"),
        (21, "order_id: missing required value"),
        (28, "unit_price: -3.49 is below the minimum 0"),
        (46, "expected 10 fields, found 3"),
    ]
    cipher = Cipher(os.environ["DW_SALES_FERNET_KEYS"])
    assert cipher.decrypt(quarantined[1][2]).startswith("SO-BAD-2,2026-11-20,y@example.com")
    assert "y@example.com" not in quarantined[1][2]
    assert report(storage, f"processed/{name}.report.json")["rows_quarantined"] == 5


def test_a_file_that_is_not_the_sales_csv_fails_its_run_clearly_and_moves_to_failed(storage, warehouse):
    storage.upload("incoming/inventory.csv", b"sku;warehouse;on_hand\r\nA-1;Berlin;12\r\n")

    result = ingest(storage, "inventory.csv")

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert "the header lacks required column(s) order_id" in message and "sku;warehouse;on_hand" in message
    assert failure.step_failure_data.error.cls_name == "Failure"
    assert names(storage) == ["failed/inventory.csv", "failed/inventory.csv.report.json"]
    assert "lacks required column" in report(storage, "failed/inventory.csv.report.json")["error"]
    assert warehouse.execute("select status, rows_loaded from bronze.batch_ledger").fetchall() == [("failed", 0)]
    assert warehouse.execute("select count(*) from bronze.sales").fetchone()[0] == 0


def test_a_record_that_is_not_utf8_late_in_a_file_is_quarantined_byte_exact_and_the_rest_loads(storage, warehouse):
    latin1 = "SO-X,2026-11-20,a@b.c,Jos\xe9,W,C,EU,1,1,EUR\r\n".encode("latin-1")
    storage.upload("incoming/latin1.csv", GOOD + latin1)

    result = ingest(storage, "latin1.csv")

    assert result.success and all(checks(result).values())
    assert warehouse.execute("select count(*) from bronze.sales").fetchone()[0] == 30
    line, raw, reason = warehouse.execute(
        "select line_number, raw_line_encrypted, reason from bronze.sales_quarantine"
    ).fetchone()
    assert (line, reason) == (32, "not UTF-8 text: byte 0xe9 at byte 26 of the record")
    assert Cipher(os.environ["DW_SALES_FERNET_KEYS"]).decrypt_bytes(raw) == latin1


def test_an_empty_file_loads_nothing_and_succeeds(storage, warehouse):
    storage.upload("incoming/empty.csv", b"")

    result = ingest(storage, "empty.csv")

    assert result.success and all(checks(result).values())
    assert report(storage, "processed/empty.csv.report.json")["rows_loaded"] == 0


def test_sensitive_columns_are_unreadable_and_decrypt_to_the_input_under_the_declared_rules_only(storage, warehouse):
    storage.upload("incoming/orders.csv", GOOD)
    assert ingest(storage, "orders.csv").success

    stored = warehouse.execute("select customer_email, customer_name from bronze.sales order by source_line").fetchall()
    expected = list(sample.rows(30, DAY))
    cipher = Cipher(os.environ["DW_SALES_FERNET_KEYS"])
    # customer_email declares trim + lower case in schema.yaml; customer_name declares nothing.
    assert [(cipher.decrypt(e), cipher.decrypt(n)) for e, n in stored] == [
        (row[2].strip().lower(), row[3]) for row in expected
    ]
    assert not any("@" in e or n.strip() == expected[i][3].strip() for i, (e, n) in enumerate(stored))
    assert (
        warehouse.execute("select count(*) from bronze.sales where customer_email like '%example.com%'").fetchone()[0]
        == 0
    )


def test_rotating_keys_reencrypts_every_value_under_the_new_key(storage, warehouse):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    storage.upload("incoming/orders.csv", sample.to_csv(sample.HEADER, [*sample.rows(12, DAY), sample.BAD_ROWS[1][0]]))
    assert ingest(storage, "orders.csv", keys=old).success
    before = warehouse.execute("select customer_email from bronze.sales order by source_line").fetchall()

    counts = rotate_keys(warehouse, Cipher(f"{new},{old}"), log=lambda _m: None)

    assert counts == {"rows_rotated": 12, "quarantine_rows_rotated": 1, "blobs": 1}
    only_new, only_old = Cipher(new), Cipher(old)
    after = warehouse.execute("select customer_email from bronze.sales order by source_line").fetchall()
    assert [only_new.decrypt(a) for (a,) in after] == [only_old.decrypt(b) for (b,) in before]
    with pytest.raises(InvalidToken):
        only_old.decrypt(after[0][0])
    raw = warehouse.execute("select raw_line_encrypted from bronze.sales_quarantine").fetchone()[0]
    assert only_new.decrypt(raw).startswith("SO-BAD-2")
    assert rotate_keys(warehouse, Cipher(f"{new},{old}"), log=lambda _m: None)["rows_rotated"] == 0


def test_the_reconcile_check_fails_when_bronze_lost_a_row_of_the_blob(storage, warehouse):
    storage.upload("incoming/orders.csv", GOOD)
    assert ingest(storage, "orders.csv").success
    warehouse.execute("delete from bronze.sales where source_line = 5")

    context = dg.build_asset_check_context()
    result = sales_rows_reconcile_with_blob(context, warehouse=warehouse_from_env(), sales_storage=storage)

    assert not result.passed
    assert result.metadata["rows_loaded"].value == 29 and result.metadata["data_lines"].value == 30


def test_the_sales_job_builds_silver_and_gold_and_their_dbt_checks_pass(storage, warehouse):
    from dw_platform.definitions import defs  # after the storage fixture named the container

    storage.upload("incoming/a.csv", sample.to_csv(sample.HEADER, list(sample.rows(20, DAY))))
    storage.upload("incoming/b.csv", sample.to_csv(sample.HEADER, list(sample.rows(10, DAY, seed=5, first_id=101))))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(sales_blobs.name, ["a.csv", "b.csv"])
    job = defs().resolve_job_def("sales_ingest")

    results = [
        job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False) for key in ("a.csv", "b.csv")
    ]

    assert all(r.success for r in results)
    last = results[-1]
    materialized = {e.asset_key.to_user_string() for e in last.get_asset_materialization_events()}
    assert {"bronze/sales", "silver/sales_cleaned", "gold/sales_daily_summary"} <= materialized
    assert_column_lineage(last)
    evaluations = {e.check_name: e.passed for e in last.get_asset_check_evaluations()}
    assert {
        "unique_sales_cleaned_order_id",
        "assert_sales_total_amount_is_quantity_times_price",
        "sales_rows_reconcile_with_blob",
    } <= set(evaluations) and all(evaluations.values()), evaluations
    assert warehouse.execute("select count(*) from silver.sales_cleaned").fetchone()[0] == 30
    revenue = warehouse.execute("select sum(revenue), sum(order_count) from gold.sales_daily_summary").fetchone()
    expected = sum(
        sample.expected_total(r) for r in [*sample.rows(20, DAY), *sample.rows(10, DAY, seed=5, first_id=101)]
    )
    assert revenue == (expected, 30)


def test_the_code_locations_sensor_and_job_ingest_a_dropped_file_and_fail_a_bad_one_without_retrying(
    storage, warehouse
):
    from dw_platform.definitions import defs  # after the storage fixture named the container

    definitions = defs()
    storage.upload("incoming/good.csv", GOOD)
    storage.upload("incoming/bad.csv", b"not,a,sales,file\n1,2,3,4\n")
    instance = dg.DagsterInstance.ephemeral()
    sensor = definitions.resolve_sensor_def("sales_incoming_sensor")

    # The code location's own resource, configured from the DW_BLOB_* variables.
    tick = sensor(
        dg.build_sensor_context(instance=instance, resources={"sales_storage": definitions.resources["sales_storage"]})
    )
    assert sorted(r.partition_key for r in tick.run_requests) == ["bad.csv", "good.csv"]
    instance.add_dynamic_partitions(sales_blobs.name, ["bad.csv", "good.csv"])
    job = definitions.resolve_job_def("sales_ingest")
    runs = {
        r.partition_key: job.execute_in_process(
            instance=instance, partition_key=r.partition_key, tags=r.tags, raise_on_error=False
        )
        for r in tick.run_requests
    }

    assert runs["good.csv"].success and not runs["bad.csv"].success
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in runs["bad.csv"].all_events)
    assert names(storage, "incoming/") == []
    assert names(storage, "failed/") == ["failed/bad.csv", "failed/bad.csv.report.json"]
    assert warehouse.execute("select count(*) from bronze.sales").fetchone()[0] == 30


ROUND_TRIP_CRLF = [
    ["SO-RT-1", "2026-11-20", "  Ann@Example.COM ", "Lee, Ann", 'Poster "Sunset"', "Decor", "eu", "2", "12.00", "eur"],
    ["SO-RT-2", " 2026-11-21 ", "", "Anna\nMaria\r\nSchmidt\rJr", "Coffee Beans, 1kg", "", " NA ", " 3 ", "18.75", ""],
    [
        "SO-RT-3",
        "2026-11-21",
        "josé@example.com",
        "  José Müller\u00a0",
        "Ünïcödé\tproduct  name",
        "N/A",
        "APAC",
        "1",
        "3.49",
        "USD",
    ],
]
ROUND_TRIP_CR = [
    ["SO-RT-4", "2026-11-22", "b@example.com", "Bo", "Notebook", "Stationery", "LATAM", "5", "3.49", "usd"],
    ["SO-RT-5", "2026-11-22", "c@example.com", "Cy\rCR", " Desk  Chair ", "Furniture", "EU", "1", "189.50", "EUR"],
]


def test_values_round_trip_byte_for_byte_into_bronze_and_by_the_declared_cleaning_into_silver(storage, warehouse):
    from decimal import Decimal

    from dw_platform.definitions import defs  # after the storage fixture named the container

    storage.upload("incoming/crlf_bom.csv", sample.to_csv(sample.HEADER, ROUND_TRIP_CRLF, bom=True))
    storage.upload("incoming/old_mac.csv", sample.to_csv(sample.HEADER, ROUND_TRIP_CR, line_end="\r"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(sales_blobs.name, ["crlf_bom.csv", "old_mac.csv"])
    job = defs().resolve_job_def("sales_ingest")

    results = [
        job.execute_in_process(instance=instance, partition_key=k, raise_on_error=False)
        for k in ("crlf_bom.csv", "old_mac.csv")
    ]

    assert all(r.success for r in results)
    cipher = Cipher(os.environ["DW_SALES_FERNET_KEYS"])
    bronze = warehouse.execute(
        "select order_id, order_date, customer_email, customer_name, product, category, region, quantity, unit_price,"
        " currency from bronze.sales order by order_id"
    ).fetchall()
    sent = ROUND_TRIP_CRLF + ROUND_TRIP_CR
    assert [[*row[:2], cipher.decrypt(row[2]), cipher.decrypt(row[3]), *row[4:]] for row in bronze] == [
        [*row[:2], row[2].strip().lower() or None, row[3], *row[4:]] for row in sent
    ]
    silver = warehouse.execute(
        "select order_id, order_date, product, category, region, quantity, unit_price, currency, total_amount"
        " from silver.sales_cleaned order by order_id"
    ).fetchall()
    assert silver == [
        ("SO-RT-1", date(2026, 11, 20), 'Poster "Sunset"', "Decor", "EU", 2, Decimal("12.00"), "EUR", Decimal("24.00")),
        (
            "SO-RT-2",
            date(2026, 11, 21),
            "Coffee Beans, 1kg",
            "Unknown",
            "NA",
            3,
            Decimal("18.75"),
            "USD",
            Decimal("56.25"),
        ),
        (
            "SO-RT-3",
            date(2026, 11, 21),
            "Ünïcödé product name",
            "Unknown",
            "APAC",
            1,
            Decimal("3.49"),
            "USD",
            Decimal("3.49"),
        ),
        ("SO-RT-4", date(2026, 11, 22), "Notebook", "Stationery", "LATAM", 5, Decimal("3.49"), "USD", Decimal("17.45")),
        (
            "SO-RT-5",
            date(2026, 11, 22),
            "Desk Chair",
            "Furniture",
            "EU",
            1,
            Decimal("189.50"),
            "EUR",
            Decimal("189.50"),
        ),
    ]
    silver_names = warehouse.execute(
        "select customer_name_encrypted from silver.sales_cleaned order by order_id"
    ).fetchall()
    assert [cipher.decrypt(n) for (n,) in silver_names] == [row[3] for row in sent]


def test_bad_records_of_a_gzip_file_are_quarantined_and_everything_else_loads(storage, warehouse):
    import gzip

    header = [*sample.HEADER, "note", "note"]  # a repeated column the schema ignores
    good = [[*row, "n1", "n2"] for row in sample.rows(30, DAY)]
    body = sample.to_csv(header, good[:10])
    body += b'SO-B1,2026-11-20,a@b.c,O"Brien,W,C,EU,1,1,EUR,n1,n2\r\n'  # line 12: stray quote
    body += b"SO-B2,2026-11-20,a@b.c,Ann,W\r\n"  # line 13: too few fields
    body += (
        b"SO-B3,2026-11-20,a@b.c,Ann," + b"W" * (2 << 20 | 1) + b",C,EU,1,1,EUR,n1,n2\r\n"
    )  # line 14: over-long field
    body += sample.to_csv(header, good[10:])[len(sample.to_csv(header, [])) :]
    body += b'SO-B4,2026-11-20,a@b.c,"never closed,W,C,EU,1,1,EUR,n1,n2\r\n'  # line 35 to the end
    storage.upload("incoming/orders.csv.gz", gzip.compress(body))

    result = ingest(storage, "orders.csv.gz")

    assert result.success and all(checks(result).values()), checks(result)
    assert warehouse.execute("select count(*) from bronze.sales").fetchone()[0] == 30
    quarantined = warehouse.execute(
        "select line_number, reason from bronze.sales_quarantine order by line_number"
    ).fetchall()
    assert [line for line, _ in quarantined] == [12, 13, 14, 35]
    assert "neither opens nor closes a quoted field" in quarantined[0][1]
    assert quarantined[1][1] == "expected 12 fields, found 5"
    assert quarantined[2][1] == "product: 2,097,153 bytes, longer than max_field_bytes (2,097,152)"
    assert quarantined[3][1] == "a quoted field is never closed: the record runs to the end of the file"
    assert (
        report(storage, "processed/orders.csv.gz.report.json").items()
        >= {"rows_loaded": 30, "rows_quarantined": 4, "data_lines": 34}.items()
    )


def test_a_utf16_file_fails_its_run_saying_what_it_is(storage, warehouse):
    storage.upload("incoming/utf16.csv", GOOD.decode().encode("utf-16"))

    result = ingest(storage, "utf16.csv")

    assert not result.success
    error = report(storage, "failed/utf16.csv.report.json")["error"]
    assert "the file is UTF-16 text" in error and "nothing was committed" in error
    assert warehouse.execute("select count(*) from bronze.sales").fetchone()[0] == 0


def test_a_bronze_table_of_the_typed_shape_is_upgraded_to_text_keeping_its_rows(storage, warehouse):
    from dw_platform.lib import migrations

    warehouse.execute(
        "create schema if not exists bronze; create table bronze.sales (order_id text, order_date date,"
        " customer_email text, customer_name text, product text, category text, region text, quantity bigint,"
        " unit_price numeric, currency text, total_amount numeric, source_line bigint, _bronze_load_ts timestamptz,"
        " _bronze_batch_id uuid, _bronze_source_file text);"
        " insert into bronze.sales values ('SO-1', '2026-11-20', null, null, 'W', null, 'EU', 3, 2.50, 'EUR', 7.50, 2,"
        " now(), gen_random_uuid(), 'incoming/old.csv')"
    )

    migrations.migrate(warehouse)

    assert warehouse.execute("select order_date, quantity, unit_price from bronze.sales").fetchall() == [
        ("2026-11-20", "3", "2.50")
    ]
    columns = sales_expected_columns(warehouse=warehouse_from_env())
    assert columns.passed, columns.metadata


def test_a_blob_resent_under_another_name_adds_no_rows_and_is_filed_with_a_note_pointing_at_the_first(
    storage, warehouse
):
    storage.upload("incoming/day1/orders.csv", GOOD)
    storage.upload("incoming/day2/orders-again.csv.zst", zstandard.ZstdCompressor().compress(GOOD))
    assert ingest(storage, "day1/orders.csv").success

    again = ingest(storage, "day2/orders-again.csv.zst")  # the same content, compressed: the same file

    assert not again.success
    assert warehouse.execute("select count(*) from bronze.sales").fetchone()[0] == 30
    assert warehouse.execute("select status from bronze.batch_ledger order by started_at").fetchall() == [
        ("succeeded",),
        ("identical",),
    ]
    note = report(storage, "failed/day2/orders-again.csv.zst.report.json")
    assert note["status"] == "identical" and note["identical_to"]["blob"] == "incoming/day1/orders.csv"
    assert "holds the same bytes as incoming/day1/orders.csv" in note["error"]
    assert not sales_no_identical_files(warehouse=warehouse_from_env()).passed


def test_a_blob_claiming_gzip_that_is_not_fails_saying_so_and_moves_to_failed(storage, warehouse):
    storage.upload("incoming/orders.csv.gz", GOOD)

    result = ingest(storage, "orders.csv.gz")

    assert not result.success
    assert (
        "orders.csv.gz claims gzip compression (its name ends in .gz) but is not compressed"
        in report(storage, "failed/orders.csv.gz.report.json")["error"]
    )
    assert names(storage) == ["failed/orders.csv.gz", "failed/orders.csv.gz.report.json"]
