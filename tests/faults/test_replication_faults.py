"""Change-capture faults on the real servers (the logical-decoding source, the warehouse, the
lakehouse): capture never stalls silently and the lakehouse never silently diverges.

Each test injects the fault (capture runs killed by their pid before they move anything, the
replication slot dropped or invalidated behind the platform's back, a column added with a default
mid-stream), then checks what an operator would: the runs end, the alert and the check say what is
wrong, and afterwards every lakehouse table equals its source table (rows and content hash: 0
lost, 0 duplicated).
"""

import os
import random
import signal
import threading
import time
from contextlib import contextmanager

import dagster as dg
import pytest
from conftest import all_equal, load_all, materialized, sources_file
from faultkit import start_child_run, wait_until

from dw_platform.defs.replication.sensors import STATE_TAG, evaluate, watch
from dw_platform.lib.webhook import AlertWebhook
from dw_platform.replication.sources import load_sources
from dw_platform.replication.status import ReplicationMeta
from dw_platform.samples.replication import seed

JOB = "replication_cdc_source_app"
NOT_STALLED = "changes_not_stalled"


@pytest.fixture
def partitions() -> dg.DagsterInstance:
    """An instance for the bulk loads: the test's table partitions are its own. (CDC runs use the
    session's instance, which child processes share.)"""
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def source_app(replication_source, warehouse, lakehouse, partitions, webhook, tmp_path, monkeypatch):
    """The small sample source, bulk-loaded, alerts posted to a local webhook, stalls noticed
    after 3 s; yields the source's admin connection."""
    url, _received = webhook
    monkeypatch.setenv("DW_ALERT_WEBHOOK_URL", url)
    sources_file(tmp_path, monkeypatch, stall_alert_minutes=0.05)
    seed(replication_source, customer_count=120, product_count=30, order_count=150, audit_count=60)
    assert load_all(code_location(), partitions).success
    return replication_source


def code_location() -> dg.Definitions:
    from dw_platform.definitions import defs  # after the fixtures set the environment

    return defs()


def run_cdc(instance, tags=None, time_budget_s: float = 0) -> dg.ExecuteInProcessResult:
    job = code_location().resolve_job_def(JOB)
    config = {"ops": {"bronze__cdc_events__source_app": {"config": {"time_budget_s": time_budget_s}}}}
    return job.execute_in_process(instance=instance, tags=tags or {}, run_config=config, raise_on_error=False)


def backfills(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Why each backfilled table was copied again, by partition."""
    return {
        e.partition: e.materialization.metadata["backfill"].value
        for e in result.get_asset_materialization_events()
        if "backfill" in e.materialization.metadata
    }


def tick(instance, lakehouse, retry_after_s: float = 0.0):
    """One evaluation of the CDC sensor, as the daemon's."""
    context = dg.build_sensor_context(instance=instance, resources={"lakehouse": lakehouse})
    return evaluate(context, load_sources()["source_app"], lakehouse, retry_after_s=retry_after_s)


def look(instance, lakehouse, webhook_url: str, cursor=None) -> dg.SensorResult:
    """One evaluation of the slot watch."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return watch(context, load_sources()["source_app"], lakehouse, AlertWebhook(url=webhook_url))


def check_of(result: dg.SensorResult) -> bool | None:
    evaluations = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert all(e.check_name == NOT_STALLED for e in evaluations)
    return evaluations[-1].passed if evaluations else None


def step_error(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data
    return failure.user_failure_data.description if failure.user_failure_data else failure.error.message


def events_logged(warehouse) -> tuple[int, int]:
    """Events in the log, and distinct source positions among them."""
    if not warehouse.execute("select to_regclass('bronze.cdc_events') is not null").fetchone()[0]:
        return 0, 0
    return warehouse.execute("select count(*), count(distinct (commit_lsn, seq)) from bronze.cdc_events").fetchone()


def slot_position(source) -> str | None:
    row = source.execute(
        "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = %s",
        (os.environ["DW_REPLICATION_SLOT"],),
    ).fetchone()
    return row[0] if row else None


@contextmanager
def capture_cannot_commit(warehouse):
    """Hold the lock a capture batch takes before it writes the log: a run gets as far as reading
    the slot, then waits, having moved nothing."""
    name = "dw_platform.replication.capture:source_app"
    warehouse.execute("select pg_advisory_lock(hashtextextended(%s, 0))", (name,))
    try:
        yield
    finally:
        warehouse.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (name,))


def waiting_on_the_lock(warehouse) -> bool:
    return warehouse.execute(
        "select exists (select from pg_locks where locktype = 'advisory' and not granted "
        "and database = (select oid from pg_database where datname = current_database()))"
    ).fetchone()[0]


def test_a_cdc_run_killed_with_both_its_retries_before_any_progress_is_requested_again_and_the_stall_alerts(
    source_app, warehouse, lakehouse, instance, webhook
):
    url, received = webhook
    source_app.execute(
        "insert into orders (order_id, customer_id, ordered_at, status, total) "
        "select 10000 + g, 1 + g % 100, now(), 'new', g from generate_series(1, 1001) g"
    )
    position = slot_position(source_app)
    request = tick(instance, lakehouse)
    assert isinstance(request, dg.RunRequest)

    killed = []
    with capture_cannot_commit(warehouse):
        for _ in range(3):  # the run, then the two run retries dagster.yaml allows (the daemon launches them)
            child = start_child_run(JOB, "", request.tags)
            wait_until(lambda: waiting_on_the_lock(warehouse), 180, "the capture run to read the slot")
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            [run] = [
                r for r in instance.get_runs(dg.RunsFilter(job_name=JOB, tags=request.tags)) if r.run_id not in killed
            ]
            assert run.status == dg.DagsterRunStatus.STARTED
            assert isinstance(tick(instance, lakehouse), dg.SkipReason)  # in progress: never requested twice
            instance.report_run_failed(run)  # what the code server or run monitoring does for a dead run
            assert instance.get_run_by_id(run.run_id).tags["dagster/will_retry"] == "true"
            assert isinstance(tick(instance, lakehouse), dg.SkipReason)  # Dagster's run retry comes next
            killed.append(run.run_id)
            wait_until(lambda: not waiting_on_the_lock(warehouse), 60, "the killed run's session to end")
    assert events_logged(warehouse) == (0, 0) and slot_position(source_app) == position  # no progress at all
    # The daemon records that the second retry is not retried (the children here are not linked
    # into one run group as its retries would be).
    instance.add_run_tags(killed[-1], {"dagster/will_retry": "false"})

    # Today's fault: the same run key every tick, skipped forever. Now: after a back-off, again.
    waiting = tick(instance, lakehouse, retry_after_s=3600)
    assert isinstance(waiting, dg.SkipReason) and "requesting the changes again in" in waiting.skip_message
    again = tick(instance, lakehouse)
    assert isinstance(again, dg.RunRequest)
    assert again.run_key == f"{request.run_key}#4" and again.tags[STATE_TAG] == request.tags[STATE_TAG]

    # Meanwhile the stall is noticed, whatever its size (1,001 changes, far below lag_alert_mb).
    stalled = look(instance, lakehouse, url)
    assert check_of(stalled) is False and "is stalled" in stalled.skip_reason.skip_message
    assert len(received) == 1 and "is stalled" in received[0]["json"]["text"]
    assert look(instance, lakehouse, url, stalled.cursor).asset_events == []  # once per episode

    result = run_cdc(instance, again.tags)  # the run the daemon launches for it
    assert result.success
    assert materialized(result)["public.orders"]["inserts"].value == 1001
    assert events_logged(warehouse) == (1001, 1001)
    assert all_equal(lakehouse)
    moving = look(instance, lakehouse, url, stalled.cursor)
    assert check_of(moving) is True and "moving again" in received[-1]["json"]["text"]
    assert isinstance(tick(instance, lakehouse), dg.SkipReason)


def test_a_dropped_slot_stops_capture_refuses_a_one_table_reset_and_a_re_seed_of_every_table_loses_nothing(
    source_app, warehouse, lakehouse, instance, partitions, webhook
):
    url, received = webhook
    source_app.execute("update customers set balance = coalesce(balance, 0) + 1 where id <= 40")
    assert run_cdc(instance).success  # capture under way
    logged = events_logged(warehouse)
    source_app.execute("update customers set full_name = 'after' where id > 40")  # 80 changes ...
    source_app.execute("update orders set status = 'lost?' where order_id <= 30")  # ... and 30 of another table
    source_app.execute("select pg_drop_replication_slot(%s)", (os.environ["DW_REPLICATION_SLOT"],))

    skipped = tick(instance, lakehouse)
    assert isinstance(skipped, dg.SkipReason) and "does not exist on the source any more" in skipped.skip_message
    alerted = look(instance, lakehouse, url)
    assert check_of(alerted) is False and "re-seed every table in ONE run" in received[-1]["json"]["text"]
    stopped = run_cdc(instance)  # by hand: fails at once, nothing captured or applied
    assert not stopped.success and "does not exist on the source any more" in step_error(stopped)
    assert events_logged(warehouse) == logged

    reset = (
        code_location()
        .resolve_job_def("replication_bulk_load_source_app")
        .execute_in_process(
            instance=partitions,
            partition_key="public.customers",
            run_config={"ops": {"bronze__lakehouse__source_app": {"config": {"full_reload": True}}}},
            raise_on_error=False,
        )
    )
    assert not reset.success and "would lose the changes of the tables it leaves out" in step_error(reset)
    assert "left out: public.audit_log, public.order_lines, public.orders, public.products" in step_error(reset)
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in reset.all_events)
    assert slot_position(source_app) is None  # no new slot: the unsafe reset made nothing

    reseed = load_all(code_location(), partitions)  # every table in one run
    assert reseed.success
    statuses = ReplicationMeta(lakehouse, "source_app").statuses()
    assert {s["start_lsn"] for s in statuses.values()} == {slot_position(source_app)}  # one position
    assert {s["snapshot_kind"] for s in statuses.values()} == {"slot"}
    assert all_equal(lakehouse)  # the 110 changes the slot lost are in the copy
    source_app.execute("update customers set full_name = 'later' where id <= 10")
    source_app.execute("delete from order_lines where order_id <= 3")
    assert run_cdc(instance).success
    assert all_equal(lakehouse)
    look(instance, lakehouse, url, alerted.cursor)
    assert "moving again" in received[-1]["json"]["text"]


@contextmanager
def slots_keep_little_wal(admin):
    """The source server keeps at most 1 MB of WAL for a slot (max_slot_wal_keep_size)."""
    before = admin.execute("show max_slot_wal_keep_size").fetchone()[0]
    admin.execute("alter system set max_slot_wal_keep_size = '1MB'")
    admin.execute("select pg_reload_conf()")
    try:
        yield
    finally:
        admin.execute(f"alter system set max_slot_wal_keep_size = '{before}'")
        admin.execute("select pg_reload_conf()")


def test_an_invalidated_slot_stops_capture_and_the_re_seed_replaces_it(
    source_app, warehouse, lakehouse, instance, partitions
):
    from dw_platform.devenv import embedded

    slot = os.environ["DW_REPLICATION_SLOT"]
    source_app.execute("update customers set full_name = 'pinned' where id <= 5")
    with embedded.source_admin_connection("postgres") as admin, slots_keep_little_wal(admin):
        source_app.execute("create table filler (n bigint primary key)")
        for n in range(10):  # new WAL segments past the slot's 1 MB, then a checkpoint removes the old ones
            source_app.execute("insert into filler values (%s)", (n,))
            admin.execute("select pg_switch_wal()")
            admin.execute("checkpoint")
            status = admin.execute("select wal_status from pg_replication_slots where slot_name = %s", (slot,))
            if status.fetchone()[0] == "lost":
                break
        else:
            raise AssertionError("the slot was not invalidated")

    skipped = tick(instance, lakehouse)
    assert isinstance(skipped, dg.SkipReason) and "was invalidated by PostgreSQL" in skipped.skip_message
    stopped = run_cdc(instance)
    assert not stopped.success and "was invalidated by PostgreSQL" in step_error(stopped)

    assert load_all(code_location(), partitions).success  # drops the lost slot, makes a new one
    assert source_app.execute(
        "select wal_status <> 'lost' from pg_replication_slots where slot_name = %s", (slot,)
    ).fetchone()[0]
    source_app.execute("update customers set full_name = 'after the re-seed' where id <= 5")
    assert run_cdc(instance).success
    assert all_equal(lakehouse)  # filler included: a new table, copied by the re-seed


def writer(stop: threading.Event, done: list[int]) -> None:
    """The application: inserts, updates and deletes on customers, orders and products, a few per
    transaction, that never name the columns being added or renamed."""
    from dw_platform.devenv import embedded

    rng = random.Random(3)
    order_id = 50_000
    with embedded.source_admin_connection() as conn:
        while not stop.is_set():
            order_id += 1
            with conn.transaction():
                conn.execute(
                    "update customers set balance = coalesce(balance, 0) + 1 where id = %s", (rng.randint(1, 120),)
                )
                conn.execute(
                    "insert into customers (full_name, created_at) values (%s, now())", (f"writer {order_id}",)
                )
                conn.execute(
                    "insert into orders (order_id, customer_id, ordered_at, status) values (%s, 1, now(), 'new')",
                    (order_id,),
                )
                conn.execute("update orders set status = 'paid' where order_id = %s", (rng.randint(1, 150),))
                conn.execute("delete from orders where order_id = %s", (order_id - rng.randint(1, 5),))
                conn.execute(
                    "update products set price = coalesce(price, 0) + 1 where sku = %s",
                    (f"SKU-{rng.randrange(30):05d}",),
                )
            done[0] += 6
            time.sleep(0.01)


def test_columns_added_with_a_default_mid_stream_are_backfilled_and_the_lakehouse_equals_the_source(
    source_app, warehouse, lakehouse, instance
):
    from dw_platform.devenv import embedded

    stop, done = threading.Event(), [0]
    thread = threading.Thread(target=writer, args=(stop, done))
    thread.start()
    try:
        wait_until(lambda: done[0] >= 200, 60, "the writer to get going")
        assert run_cdc(instance, time_budget_s=5).success
        # PostgreSQL streams none of the values existing rows get here:
        source_app.execute("alter table customers add column plan text not null default 'basic'")  # fast default
        source_app.execute("alter table orders add column ref uuid not null default gen_random_uuid()")  # rewrite
        source_app.execute("alter table products rename column name to title")
        wait_until(lambda: done[0] >= 600, 60, "more changes after the ALTERs")
        during = run_cdc(instance, time_budget_s=5)  # backfills while the writer goes on
        assert during.success
    finally:
        stop.set()
        thread.join()
    assert run_cdc(instance).success
    copied = backfills(during)
    assert set(copied) == {"public.customers", "public.orders", "public.products"}  # not the other tables
    assert "plan added with values for the existing rows" in copied["public.customers"]
    assert "ref added with values for the existing rows" in copied["public.orders"]
    assert "renamed?" in copied["public.products"]
    assert all_equal(lakehouse)
    customers = lakehouse.catalog().load_table(("bronze", "source_app", "public__customers")).scan().to_arrow()
    assert customers.column("plan").null_count == 0
    with embedded.source_admin_connection() as conn:
        assert conn.execute("select count(*) from customers").fetchone()[0] == customers.num_rows
    statuses = ReplicationMeta(lakehouse, "source_app").statuses()
    assert all(s["status"] == "completed" and not s["note"] for s in statuses.values())
