"""Integration tests of change data capture: the source's slot (pgoutput) -> the event log in the
warehouse -> the Iceberg tables, on the real PostgreSQL source server and lakehouse."""

import os
import subprocess
import sys

import dagster as dg
import pytest
from conftest import all_equal, checks_of, equal_to_source, load_all, materialized, sources_file

from dw_platform.lib.warehouse import server_connection
from dw_platform.samples.replication import seed


@pytest.fixture
def instance() -> dg.DagsterInstance:
    """An ephemeral Dagster instance (not the session's): each test's table partitions are its own."""
    return dg.DagsterInstance.ephemeral()


def run_cdc(defs, instance, **config):
    run_config = {"ops": {"bronze__cdc_events__source_app": {"config": config}}} if config else {}
    return defs.resolve_job_def("replication_cdc_source_app").execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config
    )


@pytest.fixture
def loaded(replication_source, defs, instance):
    """The sample source (small), bulk-loaded."""
    seed(replication_source, customer_count=120, product_count=30, order_count=150, audit_count=60)
    assert load_all(defs, instance).success
    return replication_source


WORKLOAD = """
insert into customers (full_name, email, created_at, balance, tags, profile, avatar, is_active)
    values ('New "One"', 'n1@example.com', now(), 12.50, '{a,b}', '{"k": 1}', '\\x00ff', true),
           (E'tab\\there', null, now(), null, null, null, null, null);
update customers set balance = balance + 1, full_name = 'renamed' where id between 3 and 7;
update orders set status = 'shipped', shipped_at = now() where order_id % 10 = 0;
delete from orders where order_id in (2, 3, 4);
delete from order_lines where order_id = 5;
update order_lines set quantity = 99 where order_id = 6 and line_no = 1;
update products set sku = 'SKU-RENAMED' where sku = 'SKU-00001';
insert into audit_log values (now(), 'carol', 'login', '{"i": 1}'), (now(), 'carol', 'login', '{"i": 1}');
update audit_log set action = 'export-all' where actor = 'alice' and action = 'export';
delete from audit_log where actor = 'bob' and action = 'delete';
"""


def test_every_operation_lands_in_the_log_and_the_lakehouse_equals_the_source(loaded, defs, instance, lakehouse):
    loaded.execute(WORKLOAD)
    result = run_cdc(defs, instance)
    assert result.success
    applied = {k: m for k, m in materialized(result).items() if k}
    assert {"public.customers", "public.orders", "public.order_lines", "public.products", "public.audit_log"} <= set(
        applied
    )
    assert applied["public.orders"]["deletes"].value == 3 and applied["public.orders"]["updates"].value == 15
    assert applied["public.customers"]["inserts"].value == 2
    assert checks_of(result) == {
        "replication_lag": True,
        "no_stale_unapplied_events": True,
        "lakehouse_matches_source": True,
        "changes_not_stalled": True,
        # The lakehouse's own checks, for the tables the run changed.
        "rows_match_snapshot": True,
        "primary_key_unique": True,
        "no_failed_tables": True,
        "schema_change_notifications_sent": True,
    }
    assert all_equal(lakehouse)
    with server_connection(os.environ["DW_PG_DATABASE"]) as wh:
        events = wh.execute("select topic, op, count(*) from bronze.cdc_events group by topic, op").fetchall()
        offsets = wh.execute(
            'select topic, min("offset"), max("offset"), count(*) from bronze.cdc_events group by topic'
        ).fetchall()
        sample = wh.execute(
            "select event from bronze.cdc_events where topic = 'source_app.public.customers' and op = 'u' limit 1"
        ).fetchone()[0]
    assert ("source_app.public.orders", "d", 3) in events
    assert all(low == 0 and high == n - 1 for _, low, high, n in offsets)  # offsets contiguous per topic
    assert set(sample) >= {"before", "after", "source", "op", "ts_ms"} and sample["op"] == "u"
    assert {"lsn", "txId", "ts_ms", "schema", "table"} <= set(sample["source"])
    assert sample["after"]["full_name"] == "renamed"


def test_the_lakehouse_checks_follow_each_capture_run_and_an_operator_can_run_one_alone(loaded, defs, instance):
    from dw_platform.defs.replication.partitions import lakehouse_key

    key = lakehouse_key("source_app")
    loaded.execute("update customers set balance = balance + 1 where id = 3")

    result = run_cdc(defs, instance)

    assert result.success
    evaluated = {c.check_name: c for c in result.get_asset_check_evaluations() if c.asset_key == key}
    assert set(evaluated) == {
        "rows_match_snapshot",
        "primary_key_unique",
        "no_failed_tables",
        "schema_change_notifications_sent",
    }
    assert all(c.passed for c in evaluated.values())
    assert evaluated["primary_key_unique"].metadata["tables_checked"].value == 1  # customers, which changed

    # As the UI's Execute on the check: a run of that check alone, over every table.
    alone = dg.define_asset_job(
        "pk_check", selection=dg.AssetSelection.checks(dg.AssetCheckKey(key, "primary_key_unique"))
    )
    result = (
        dg.Definitions.merge(defs, dg.Definitions(jobs=[alone]))
        .resolve_job_def("pk_check")
        .execute_in_process(instance=instance)
    )
    assert result.success and not result.get_asset_materialization_events()
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "primary_key_unique" and check.passed
    assert check.metadata["tables_checked"].value > 1


def events_per_topic() -> dict[str, int]:
    with server_connection(os.environ["DW_PG_DATABASE"]) as wh:
        return dict(wh.execute("select topic, count(*) from bronze.cdc_events group by topic").fetchall())


def statuses(lakehouse) -> dict[str, dict]:
    from dw_platform.replication.status import ReplicationMeta

    return ReplicationMeta(lakehouse, "source_app").statuses()


def test_a_crash_between_the_log_commit_and_the_slot_advance_rereads_without_duplicating(
    loaded, defs, instance, lakehouse
):
    from dw_platform.replication import capture
    from dw_platform.replication.capture import Capture
    from dw_platform.replication.sources import load_sources

    loaded.execute(WORKLOAD)
    source = load_sources()["source_app"]

    def crash():
        raise KeyboardInterrupt("killed after the log commit")

    capture.AFTER_LOG_COMMIT = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            Capture(source, lakehouse).run(batch_changes=1000)
    finally:
        capture.AFTER_LOG_COMMIT = None
    logged = events_per_topic()
    assert sum(logged.values()) == 43
    again = Capture(source, lakehouse).run(batch_changes=1000)  # the slot did not move: the same changes
    assert (again.events, again.duplicates) == (0, 43)
    assert events_per_topic() == logged
    assert again.lag_bytes == 0 or again.confirmed_lsn  # the slot moved past them now
    assert not Capture(source, lakehouse).has_pending_changes()
    assert run_cdc(defs, instance).success and all_equal(lakehouse)


KILL_SCRIPT = """
import os, dagster as dg
from dw_platform.definitions import defs
from dw_platform.replication import apply
apply.AFTER_TABLE_COMMIT = lambda key: os._exit(137)  # killed right after the first table's Iceberg commit
defs().resolve_job_def("replication_cdc_source_app").execute_in_process(instance=dg.DagsterInstance.ephemeral())
"""


def test_killing_the_apply_between_the_iceberg_commit_and_the_offset_commit_changes_nothing_on_rerun(
    loaded, defs, instance, lakehouse
):
    """The first topic in order is the audit log, a table without a primary key: applying its
    batch twice would duplicate rows, so this also shows the batch is not applied twice."""
    loaded.execute(WORKLOAD)
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT], env=os.environ, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr[-3000:]
    audit = lakehouse.catalog().load_table(statuses(lakehouse)["public.audit_log"]["iceberg_table"])
    summary = audit.current_snapshot().summary
    assert summary["dw.operation"] == "cdc_apply"  # the data committed ...
    assert statuses(lakehouse)["public.audit_log"]["applied_offset"] is None  # ... the offset did not
    rerun = run_cdc(defs, instance)
    assert rerun.success
    assert all_equal(lakehouse)  # no duplicate, no lost change
    after = statuses(lakehouse)
    assert after["public.audit_log"]["applied_offset"] == int(summary["dw.applied-offset"])
    assert {k: s["applied_offset"] for k, s in after.items() if s["applied_offset"] is not None} == {
        k.removeprefix("source_app."): n - 1 for k, n in events_per_topic().items()
    }
    assert checks_of(rerun)["lakehouse_matches_source"]


def test_changes_at_or_before_a_table_start_position_are_ignored(loaded, defs, instance, lakehouse):
    """audit_log has no primary key: a change applied on top of a copy that already holds it would
    show as a duplicate row. It is reloaded after the change, so its start position moves past it."""
    loaded.execute("insert into audit_log values (now(), 'dave', 'before-reload', null)")  # in the slot, not applied
    keys = instance.get_dynamic_partitions("replication_source_app_tables")
    reload = defs.resolve_job_def("replication_bulk_load_source_app").execute_in_process(
        instance=instance,
        partition_key="public.audit_log",
        run_config={"ops": {"bronze__lakehouse__source_app": {"config": {"full_reload": True}}}},
    )
    assert reload.success and "public.audit_log" in keys
    start = statuses(lakehouse)["public.audit_log"]["start_lsn"]
    loaded.execute("insert into audit_log values (now(), 'dave', 'after-reload', null)")
    result = run_cdc(defs, instance)
    assert result.success
    applied = materialized(result)["public.audit_log"]
    assert applied["dropped_before_start"].value == 1 and applied["inserts"].value == 1
    assert start != applied["applied_lsn"].value
    assert all_equal(lakehouse)
    rows = lakehouse.catalog().load_table(statuses(lakehouse)["public.audit_log"]["iceberg_table"]).scan().to_arrow()
    assert rows.column("action").to_pylist().count("before-reload") == 1


def test_a_schema_change_evolves_the_table_is_recorded_and_notified_before_its_rows_and_time_travel_keeps_the_past(
    replication_source, warehouse, instance, lakehouse, webhook, monkeypatch
):
    from dw_platform.definitions import defs as load_defs
    from dw_platform.replication.status import ReplicationMeta

    url, received = webhook
    monkeypatch.setenv("DW_ALERT_WEBHOOK_URL", url)
    defs = load_defs()
    seed(replication_source, customer_count=50, product_count=10, order_count=40, audit_count=10)
    assert load_all(defs, instance).success
    customers = lakehouse.catalog().load_table(statuses(lakehouse)["public.customers"]["iceberg_table"])
    before = customers.current_snapshot()
    old_name = replication_source.execute("select full_name from customers where id = 1").fetchone()[0]
    replication_source.execute("alter table customers add column tier text")
    replication_source.execute("alter table orders alter column total type numeric(16,2)")  # widens in place
    replication_source.execute("update customers set tier = 'gold', full_name = 'changed' where id <= 3")
    replication_source.execute("update orders set total = 12345678901234.56 where order_id = 1")
    result = run_cdc(defs, instance)
    assert result.success and all_equal(lakehouse)
    applied = materialized(result)
    assert "backfill" not in applied["public.customers"]  # a column without a default: nothing to copy
    assert "total changed type" in applied["public.orders"]["backfill"].value  # rows rewritten: copied again
    changes = [r for r in ReplicationMeta(lakehouse, "source_app").schema_changes() if r["schema_version"] == 2]
    assert {(r["table_name"], r["change_type"], r["column_name"]) for r in changes} == {
        ("public.customers", "column_added", "tier"),
        ("public.orders", "type_changed", "total"),
    }
    assert all(r["notification_sent"] for r in changes)
    assert any("column added `tier` text" in r["json"]["text"] for r in received)
    customers = customers.refresh()
    fields = {f.name: str(f.field_type) for f in customers.schema().fields}
    assert fields["tier"] == "string"
    orders = lakehouse.catalog().load_table(statuses(lakehouse)["public.orders"]["iceberg_table"])
    assert str(orders.schema().find_field("total").field_type) == "decimal(16, 2)"
    # the change was recorded before the first row with the new shape was written
    data = [s for s in customers.snapshots() if s.summary["dw.operation"] == "cdc_apply"]
    recorded = min(r["change_time"] for r in changes if r["table_name"] == "public.customers")
    assert recorded.timestamp() * 1000 <= min(s.timestamp_ms for s in data)
    # time travel: the bulk load's snapshot is the table before the change
    past = customers.scan(snapshot_id=before.snapshot_id, row_filter="id = 1").to_arrow()
    assert "tier" not in past.column_names and past.column("full_name").to_pylist() == [old_name]
    assert customers.scan(row_filter="id = 1").to_arrow().column("full_name").to_pylist() == ["changed"]


def test_a_type_change_iceberg_cannot_follow_re_copies_only_that_table_and_the_others_go_on(
    loaded, defs, instance, lakehouse
):
    """int -> text: PostgreSQL rewrites every row without streaming it; the table is copied again
    at a new position (its column replaced), the other tables keep applying their changes."""
    loaded.execute("alter table orders alter column customer_id type text using 'c' || customer_id")
    loaded.execute("update orders set status = 'x' where order_id = 1")
    loaded.execute("update customers set full_name = 'still applied' where id = 1")
    result = run_cdc(defs, instance)
    assert result.success
    status = statuses(lakehouse)
    assert status["public.orders"]["status"] == "completed" and status["public.orders"]["snapshot_kind"] == "temporary"
    assert "customer_id changed type" in materialized(result)["public.orders"]["backfill"].value
    assert materialized(result)["public.customers"]["updates"].value == 1
    assert all_equal(lakehouse)
    assert checks_of(result)["no_stale_unapplied_events"] is True


def test_a_table_created_on_the_source_after_the_bulk_load_is_created_from_its_relation(
    loaded, defs, instance, lakehouse
):
    loaded.execute("create table promotions (code text primary key, percent numeric(5,2), starts date, note jsonb)")
    loaded.execute(
        "insert into promotions values ('SPRING', 10.00, '2026-03-01', '{\"a\": 1}'), ('SUMMER', 15.50, null, null)"
    )
    loaded.execute("update promotions set percent = 12.25 where code = 'SPRING'")
    result = run_cdc(defs, instance)
    assert result.success
    created = materialized(result)["public.promotions"]
    assert created["created_from_change_stream"].value is True and created["inserts"].value == 2
    status = statuses(lakehouse)["public.promotions"]
    assert status["status"] == "completed" and status["snapshot_kind"] == "change_stream" and status["start_lsn"]
    assert "public.promotions" in instance.get_dynamic_partitions("replication_source_app_tables")
    assert equal_to_source(lakehouse, {"public.promotions"})["public.promotions"]["match"]


def test_truncate_empties_the_table_and_is_recorded(loaded, defs, instance, lakehouse):
    loaded.execute("truncate order_lines")
    loaded.execute("insert into order_lines values (1, 1, 'SKU-00002', 3, 9.99, 0, '10:00:00')")
    loaded.execute("truncate audit_log")
    result = run_cdc(defs, instance)
    assert result.success
    assert materialized(result)["public.order_lines"]["truncates"].value == 1
    status = statuses(lakehouse)
    assert status["public.order_lines"]["truncated_at"] and status["public.audit_log"]["truncated_at"]
    assert all_equal(lakehouse)
    assert lakehouse.catalog().load_table(status["public.audit_log"]["iceberg_table"]).scan().count() == 0


def sensor_context(instance, lakehouse, cursor=None):
    return dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lakehouse": lakehouse})


def test_the_sensor_requests_a_run_only_when_there_is_something_to_capture_or_apply(loaded, defs, instance, lakehouse):
    from dw_platform.defs.replication.sensors import evaluate
    from dw_platform.replication.sources import load_sources

    source = load_sources()["source_app"]
    assert definitions_sensor(defs).default_status == dg.DefaultSensorStatus.STOPPED
    assert definitions_sensor(defs).minimum_interval_seconds == 10
    idle = evaluate(sensor_context(instance, lakehouse), source, lakehouse)
    assert isinstance(idle, dg.SkipReason) and "nothing to capture" in idle.skip_message
    loaded.execute("update customers set full_name = 'x' where id = 1")
    request = evaluate(sensor_context(instance, lakehouse), source, lakehouse)
    assert isinstance(request, dg.RunRequest) and request.tags["dw/replication_cdc"] == "source_app"
    assert request.run_key.endswith(request.tags["dw/cdc_state"])  # the state it starts from
    assert evaluate(sensor_context(instance, lakehouse), source, lakehouse).run_key == request.run_key  # same state
    assert run_cdc(defs, instance).success
    assert isinstance(evaluate(sensor_context(instance, lakehouse), source, lakehouse), dg.SkipReason)


def definitions_sensor(defs):
    return defs.resolve_sensor_def("replication_cdc_source_app")


def test_a_stalled_slot_alerts_once_through_the_webhook_and_again_when_it_moves(
    loaded, defs, instance, lakehouse, webhook, tmp_path, monkeypatch
):
    from dw_platform.defs.replication.sensors import watch
    from dw_platform.lib.webhook import AlertWebhook
    from dw_platform.replication.sources import load_sources

    sources_file(tmp_path, monkeypatch, lag_alert_mb=0, stall_alert_minutes=5)
    source = load_sources()["source_app"]
    url, received = webhook
    hook = AlertWebhook(url=url)
    loaded.execute("update customers set full_name = 'y' where id = 2")  # WAL the slot has not confirmed
    clock = iter([1000.0, 1100.0, 1400.0, 1500.0, 1600.0])
    cursor = None
    for expected in (0, 0, 1, 1):  # first look, then 100 s, 400 s, 500 s without movement
        result = watch(sensor_context(instance, lakehouse, cursor), source, lakehouse, hook, clock=lambda: next(clock))
        cursor = result.cursor
        assert not result.run_requests and len(received) == expected
    assert "is stalled" in received[0]["json"]["text"]
    assert run_cdc(defs, instance).success  # the slot moves
    watch(sensor_context(instance, lakehouse, cursor), source, lakehouse, hook, clock=lambda: next(clock))
    assert len(received) == 2 and "moving again" in received[1]["json"]["text"]


def test_a_second_capture_run_of_a_source_fails_at_once_instead_of_overlapping(loaded, defs, instance, lakehouse):
    from dw_platform.replication.cdc import exclusive

    loaded.execute("update customers set full_name = 'z' where id = 3")
    with exclusive(lakehouse, "source_app"):  # a run in progress
        second = run_cdc(defs, instance)
    assert not second.success
    failure = next(e for e in second.all_events if e.event_type_value == "STEP_FAILURE")
    assert "another change-capture run of source_app is in progress" in failure.step_failure_data.error.message
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in second.all_events)
    assert run_cdc(defs, instance).success and all_equal(lakehouse)


def test_a_missing_publication_fails_the_bulk_load_with_the_reason_and_no_retries(
    replication_source, warehouse, instance, tmp_path, monkeypatch
):
    from dw_platform.definitions import defs as load_defs

    sources_file(tmp_path, monkeypatch, publication_mode="existing", publication="dw_never_created")
    seed(replication_source, customer_count=5, product_count=5, order_count=5, audit_count=5)
    result = load_all(load_defs(), instance)
    assert not result.success
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert (
        "does not exist on the source (publication_mode: existing)"
        in failure.step_failure_data.user_failure_data.description
    )


def test_the_source_is_read_by_a_replication_role_that_is_not_a_superuser(loaded, defs, instance, lakehouse):
    """The embedded default reads the source as `dw_replication` (REPLICATION, SELECT on the
    published tables): the bulk load (the fixture) and change capture work with nothing more."""
    import psycopg

    with psycopg.connect(os.environ["DW_REPLICATION_SOURCE_URL"], autocommit=True) as conn:
        role = conn.execute(
            "select rolname, rolsuper, rolreplication, rolcreatedb, rolcreaterole, rolbypassrls "
            "from pg_roles where rolname = current_user"
        ).fetchone()
        assert role == ("dw_replication", False, True, False, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create publication another for all tables")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update customers set full_name = 'no' where id = 1")
    loaded.execute(WORKLOAD)
    assert run_cdc(defs, instance).success and all_equal(lakehouse)
