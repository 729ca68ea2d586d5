"""Integration tests of the replication domain's bulk load, on the real PostgreSQL source server
(wal_level=logical) and the lakehouse (pyiceberg SQL catalog in the test's warehouse database)."""

import os
import struct
import threading
import time
from contextlib import contextmanager

import dagster as dg
import psycopg
import pytest
from conftest import checks_of, load_all, materialized

from dw_platform.devenv import embedded
from dw_platform.samples.replication import seed


@pytest.fixture
def instance() -> dg.DagsterInstance:
    """An ephemeral Dagster instance (not the session's): each test's table partitions are its own."""
    return dg.DagsterInstance.ephemeral()


def test_the_sample_source_loads_into_iceberg(replication_source, defs, instance):
    counts = seed(replication_source, customer_count=200, product_count=50, order_count=300, audit_count=100)
    result = load_all(defs, instance)
    assert result.success
    rows = {
        e.partition: e.materialization.metadata["dagster/row_count"].value
        for e in result.get_asset_materialization_events()
    }
    assert rows == {f"public.{t}": n for t, n in counts.items() if t != "s_staging_import"}


ALL_TYPES_DDL = """
create type mood as enum ('sad', 'ok', 'happy');
create domain positive_amount as numeric(8,3) check (value > 0);
create domain short_text as varchar(10);
create table all_types (
    id integer primary key, i2 smallint, i4 integer, i8 bigint, r4 real, f8 double precision,
    n_38_10 numeric(38,10), n_5_2 numeric(5,2), n_free numeric, flag boolean,
    t text, vc varchar(5), ch char(4), d date, ts timestamp, tstz timestamptz, tm time, tmtz timetz,
    iv interval, u uuid, j json, jb jsonb, ints integer[], texts text[], grid integer[][], b bytea,
    m mood, amount positive_amount, code short_text, ip inet, mac macaddr, bits bit(4), vbits varbit, x tsvector,
    p point, cash money
);
insert into all_types values
 (1, -32768, -2147483648, -9223372036854775808, 'NaN', 'Infinity', 1234567890123456789012345678.0123456789,
  -999.99, 1e-30, true, E'tab\\there\\nnew "q" \\\\ \\u00e9 🚀', 'abc', 'ab', '0001-01-01', '0001-01-01 00:00:00',
  '0001-01-01 00:00:00+00', '00:00:00', '01:02:03+05:30', '1 year 2 mons -3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1, "a": [1, 2]}', '{"b": 1, "a": [1, 2], "c": null}',
  '{1,NULL,3}', '{"a,b","q\\"uote",NULL,""}', '{{1,2},{3,4}}', '\\x00ff00', 'happy', 12.345, 'short', '192.168.0.1/24',
  '08:00:2b:01:02:03', B'1010', B'101', 'fat cat', '(1.5,2)', 12.34),
 (2, 32767, 2147483647, 9223372036854775807, '-Infinity', 5e-324, -0.0000000001, 0, 'NaN', false,
  '', 'abcde', 'abcd', '9999-12-31', '9999-12-31 23:59:59.999999', '2026-11-29 12:34:56.123456+01', '23:59:59.999999',
  '00:00:00+00', '0', '00000000-0000-0000-0000-000000000000', 'null', '[]', '{}', '{}', '{}', '\\x', 'sad', 0.001,
  '', '::1', 'ff:ff:ff:ff:ff:ff', B'0000', B'', '', '(0,0)', -1),
 (3, 0, 0, 0, 1.1, 0.1, 0, 1.5, 123.456, null, null, null, null, null, null, null, null, null, null, null,
  null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null),
 (4, null, null, null, -0.0, -0.0, null, null, null, null, 'x', null, null, '2024-02-29', '2024-02-29 12:00:00',
  '2024-02-29 23:30:00-07', '12:00:00.5', null, null, null, null, null, null, null, null, '\\x0a0d', null, null,
  null, null, null, null, null, null, null, null);
"""


def iceberg_rows(lakehouse, table: str) -> dict:
    data = lakehouse.catalog().load_table(("bronze", "source_app", table)).scan().to_arrow()
    return {row["id"]: row for row in data.to_pylist()}


def same(a, b) -> bool:
    import math

    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b) if not isinstance(a, (int, float)) else a == b


def test_every_mapped_type_round_trips_exactly_through_the_bulk_load_and_the_change_text_path(
    replication_source, defs, instance, lakehouse
):
    from dw_platform.replication.postgres import PostgresExtractor
    from dw_platform.replication.sources import load_sources
    from dw_platform.replication.typemap import text_to_iceberg_array

    replication_source.execute(ALL_TYPES_DDL)
    assert load_all(defs, instance).success
    loaded = iceberg_rows(lakehouse, "public__all_types")
    table = next(t for t in PostgresExtractor(load_sources()["source_app"]).discover() if t.name == "all_types")
    replication_source.execute("set timezone = 'Asia/Kolkata'")  # the bulk path must not depend on it
    for column in table.columns:
        native = column.read_as != "text" or column.kind == "decimal"
        expected = dict(
            replication_source.execute(
                f'select id, "{column.name}" from all_types'
                if native
                else f'select id, case when "{column.name}" is not null then concat("{column.name}") end from all_types'
            ).fetchall()
        )
        if column.kind == "float":  # psycopg reads real as a double; the stored value is a float32
            expected = {
                i: None if v is None else struct.unpack("f", struct.pack("f", v))[0] for i, v in expected.items()
            }
        got = {i: row[column.name] for i, row in loaded.items()}
        assert all(same(got[i], expected[i]) for i in expected), (column, got, expected)
        # pgoutput sends each type's output function's text (session TimeZone UTC), as concat() does:
        # it must parse to the same values
        replication_source.execute("set timezone = 'UTC'")
        texts = dict(
            replication_source.execute(
                f'select id, case when "{column.name}" is not null then concat("{column.name}") end from all_types'
            ).fetchall()
        )
        replication_source.execute("set timezone = 'Asia/Kolkata'")
        parsed = text_to_iceberg_array([texts[i] for i in sorted(texts)], column).to_pylist()
        assert all(same(p, got[i]) for p, i in zip(parsed, sorted(texts))), (column, parsed, got)
    # decimals stay decimals, timestamptz stays UTC, bytea is binary, jsonb/arrays are text
    schema = lakehouse.catalog().load_table(("bronze", "source_app", "public__all_types")).schema()
    kinds = {f.name: str(f.field_type) for f in schema.fields}
    assert kinds["n_38_10"] == "decimal(38, 10)" and kinds["amount"] == "decimal(8, 3)"
    assert kinds["tstz"] == "timestamptz" and kinds["b"] == "binary" and kinds["jb"] == "string"
    assert kinds["ints"] == "string" and kinds["n_free"] == "string" and kinds["i2"] == "int" and kinds["i8"] == "long"


def fast_retry_defs(tmp_path, monkeypatch):
    """The code location with the default sources.yaml but short lock waits and back-off."""
    from dw_platform.definitions import defs
    from dw_platform.replication.sources import DEFAULT_FILE

    text = (
        DEFAULT_FILE.read_text()
        .replace("lock_timeout_s: 30", "lock_timeout_s: 1")
        .replace("retry_delay_s: 5", "retry_delay_s: 0.2")
    )
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    monkeypatch.setenv("DW_REPLICATION_SOURCES", str(path))
    return defs()


def wait_for(condition, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextmanager
def holding_table_lock(warehouse, key: str):
    """Hold the warehouse lock a bulk load of `key` takes before it reads: its worker waits."""
    name = f"dw_platform.replication:source_app:{key}"
    with psycopg.connect(warehouse.info.dsn, password=warehouse.info.password, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(hashtextextended(%s, 0))", (name,))
        yield conn
        conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (name,))


def a_worker_waits(warehouse, relation: str = "") -> bool:
    """A bulk-load worker waits on a table lock (the warehouse's), or on `relation` on the source."""
    if relation:
        return False
    return warehouse.execute(
        "select 1 from pg_locks where locktype = 'advisory' and not granted "
        "and database = (select oid from pg_database where datname = current_database())"
    ).fetchone()


def source_waits_on(source, relation: str) -> bool:
    return source.execute(
        "select 1 from pg_locks where not granted and relation = %s::regclass", (relation,)
    ).fetchone()


def in_background(fn):
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", fn()))
    thread.start()
    return thread, outcome


def test_the_copy_is_the_database_at_the_slot_position_not_what_commits_after(
    replication_source, warehouse, defs, instance
):
    """Rows committed after the slot was created are not in the bulk copy (they are in the slot's
    stream instead), even for a table read after they committed."""
    seed(replication_source, customer_count=200, product_count=50, order_count=300, audit_count=100)
    before = {t: replication_source.execute(f"select count(*) from {t}").fetchone()[0] for t in ("orders", "customers")}
    slot = os.environ["DW_REPLICATION_SLOT"]
    with holding_table_lock(warehouse, "public.orders"):
        thread, outcome = in_background(lambda: load_all(defs, instance))
        wait_for(lambda: a_worker_waits(warehouse))  # the slot exists; orders is not read yet
        replication_source.execute(
            "insert into orders select order_id + 100000, customer_id, ordered_at, 'late', total, note, shipped_at "
            "from orders limit 25"
        )
        replication_source.execute(
            "insert into customers (full_name, created_at) select 'late', now() from generate_series(1, 7)"
        )
    thread.join()
    result = outcome["result"]
    assert result.success
    rows = {k: m["dagster/row_count"].value for k, m in materialized(result).items()}
    assert rows["public.orders"] == before["orders"] and rows["public.customers"] == before["customers"]
    position = {m["start_lsn"].value for m in materialized(result).values()}
    assert len(position) == 1  # every table at the one slot position
    confirmed = replication_source.execute(
        "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = %s", (slot,)
    ).fetchone()[0]
    assert position == {confirmed}
    inserts = replication_source.execute(
        "select count(*) from pg_logical_slot_peek_binary_changes(%s, null, null, 'proto_version', '1', "
        "'publication_names', %s) where substr(data, 1, 1) = 'I'",
        (slot, os.environ["DW_REPLICATION_PUBLICATION"]),
    ).fetchone()[0]
    assert inserts == 25 + 7  # the late rows wait in the slot for change data capture


def test_a_failing_table_is_retried_the_others_complete_and_a_rerun_loads_only_what_is_not_completed(
    replication_source, warehouse, instance, tmp_path, monkeypatch, lakehouse
):
    from dw_platform.replication.status import ReplicationMeta

    defs = fast_retry_defs(tmp_path, monkeypatch)
    seed(replication_source, customer_count=200, product_count=50, order_count=300, audit_count=100)
    replication_source.execute("update customers set balance = 'NaN' where id = 7")  # no decimal can hold it
    blocker = embedded.source_admin_connection()  # an ALTER TABLE in progress on orders (its owner's)
    blocker.autocommit = False
    with holding_table_lock(warehouse, "public.orders"):
        thread, outcome = in_background(lambda: load_all(defs, instance))
        wait_for(lambda: a_worker_waits(warehouse))  # after the slot was made, before orders is read
        blocker.execute("lock table orders in access exclusive mode")
    wait_for(lambda: source_waits_on(replication_source, "orders"))
    time.sleep(1.3)  # past the 1 s lock timeout: the first attempt failed, the second waits
    blocker.rollback()
    blocker.close()
    thread.join()
    first = outcome["result"]

    assert not first.success
    loaded = materialized(first)
    assert set(loaded) == {"public.audit_log", "public.order_lines", "public.orders", "public.products"}
    assert loaded["public.orders"]["attempts"].value == 2
    assert checks_of(first)["no_failed_tables"] is False
    status = ReplicationMeta(lakehouse, "source_app").statuses()
    assert status["public.customers"]["status"] == "failed"
    assert "balance" in status["public.customers"]["last_error"]
    assert status["public.orders"]["status"] == "completed"

    replication_source.execute("update customers set balance = 0 where balance = 'NaN'")
    second = load_all(defs, instance)
    assert second.success
    assert set(materialized(second)) == {"public.customers"}  # completed tables are skipped
    again = materialized(second)["public.customers"]
    assert again["snapshot_kind"].value == "temporary"  # the slot exists: a temporary slot's snapshot
    assert again["start_lsn"].value != loaded["public.orders"]["start_lsn"].value
    status = ReplicationMeta(lakehouse, "source_app").statuses()
    assert {s["status"] for s in status.values()} == {"completed"}
    assert status["public.customers"]["attempts"] == 2
    assert checks_of(second) == {
        "rows_match_snapshot": True,
        "primary_key_unique": True,
        "no_failed_tables": True,
        "schema_change_notifications_sent": True,
    }


def test_a_changed_source_schema_on_reload_is_recorded_notified_and_the_old_data_stays_readable(
    replication_source, warehouse, instance, webhook, monkeypatch, lakehouse
):
    from dw_platform.definitions import defs as load_defs
    from dw_platform.replication.status import ReplicationMeta

    seed(replication_source, customer_count=50, product_count=40, order_count=60, audit_count=10)
    monkeypatch.setenv("DW_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/unreachable")
    assert load_all(load_defs(), instance).success
    meta = ReplicationMeta(lakehouse, "source_app")
    baseline = meta.schema_changes("public.products")
    assert [(r["change_type"], r["schema_version"], r["notification_sent"]) for r in baseline] == [
        ("table_created", 1, None)
    ]
    products = lakehouse.catalog().load_table(("bronze", "source_app", "public__products"))
    before_change = products.current_snapshot().snapshot_id

    replication_source.execute("alter table products add column color text default 'red'")
    replication_source.execute("alter table products drop column weight_kg")
    replication_source.execute("alter table products alter column price type numeric(14,2)")  # widens in place
    replication_source.execute("alter table orders alter column customer_id type text")  # int -> text: replaced
    reload = {"ops": {"bronze__lakehouse__source_app": {"config": {"full_reload": True}}}}
    unsent = load_all(load_defs(), instance, run_config=reload)  # the webhook is unreachable
    assert unsent.success
    assert checks_of(unsent)["schema_change_notifications_sent"] is False
    changes = {
        (r["table_name"], r["change_type"], r["column_name"]): r
        for r in meta.schema_changes()
        if r["schema_version"] == 2
    }
    assert set(changes) == {
        ("public.products", "column_added", "color"),
        ("public.products", "column_removed", "weight_kg"),
        ("public.products", "type_changed", "price"),
        ("public.orders", "type_changed", "customer_id"),
    }
    assert all(r["notification_sent"] is False for r in changes.values())
    price = changes[("public.products", "type_changed", "price")]
    assert '"numeric(10,2)"' in price["schema_before"] and '"numeric(14,2)"' in price["schema_after"]

    url, received = webhook
    monkeypatch.setenv("DW_ALERT_WEBHOOK_URL", url)
    sent = load_all(load_defs(), instance)  # nothing to load; pending notifications go out
    assert sent.success and not materialized(sent)
    assert checks_of(sent)["schema_change_notifications_sent"] is True
    texts = sorted(r["json"]["text"] for r in received)
    assert len(texts) == 2
    assert "`public.orders`" in texts[0] and "type changed `customer_id` integer -> text" in texts[0]
    assert "column added `color` text" in texts[1] and "column removed `weight_kg`" in texts[1]
    assert all(
        r["notification_sent"] and r["notification_sent_at"] for r in meta.schema_changes() if r["schema_version"] == 2
    )

    products = products.refresh()
    fields = {f.name: str(f.field_type) for f in products.schema().fields}
    assert fields["price"] == "decimal(14, 2)" and fields["color"] == "string" and "weight_kg" not in fields
    orders = lakehouse.catalog().load_table(("bronze", "source_app", "public__orders"))
    assert str(orders.schema().find_field("customer_id").field_type) == "string"
    # time travel: the snapshot before the reload still reads the old shape and data
    old = products.scan(snapshot_id=before_change).to_arrow()
    assert "weight_kg" in old.column_names and "color" not in old.column_names and old.num_rows == 40
    assert set(products.scan().to_arrow().column("color").to_pylist()) == {"red"}


def test_validate_lakehouse_counts_rows_names_missing_tables_and_hides_empty_ones(replication_source, defs, instance):
    counts = seed(replication_source, customer_count=20, product_count=10, order_count=10, audit_count=5)
    replication_source.execute("create table empty_one (id int primary key)")
    assert load_all(defs, instance).success
    validate = defs.resolve_job_def("validate_lakehouse")
    report = validate.execute_in_process(
        instance=instance, run_config={"ops": {"validate_lakehouse_tables": {"config": {"hide_empty": True}}}}
    )
    assert report.success
    observed = report.asset_observations_for_node("validate_lakehouse_tables")[0].metadata
    assert observed["row_counts"].value == {f"public.{t}": n for t, n in counts.items() if t != "s_staging_import"}
    assert observed["tables"].value == 6

    replication_source.execute("create table arrived_later (id int primary key)")  # not loaded yet
    failed = validate.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    observed = failed.asset_observations_for_node("validate_lakehouse_tables")[0].metadata
    assert observed["missing_from_lakehouse"].value == "public.arrived_later"
    assert "public.empty_one" in observed["row_counts"].value
