"""`dw` as a newcomer meets it: every command and option explains itself, `dw sql` opens psql on
the warehouse (starting the embedded services when nothing is configured), `dw drop` puts a file
where its domain's sensor looks."""

import argparse
import os
import subprocess
import sys
from datetime import datetime, timezone

import dagster as dg

from dw_platform.cli import parser
from dw_platform.devenv import embedded


def dw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dw_platform.cli", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=300,
        cwd=embedded.PROJECT_ROOT,
    )


def test_every_command_and_option_has_help_text():
    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    helped = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(helped) == set(commands.choices) and all(helped.values()), helped
    for name, sub in commands.choices.items():
        assert sub.description, name
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"dw {name} {action.dest} has no help text"


def test_dw_sql_runs_psql_on_the_configured_warehouse(databases):
    result = dw("sql", "-Atc", "select current_database(), current_user")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{databases['warehouse']}|{embedded.PIPELINE_ROLE}"


def test_dw_sql_starts_the_embedded_services_when_nothing_is_configured(server):
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("DW_PG", "DW_CUSTOMER", "DAGSTER_PG"))}
    result = dw("sql", "-Atc", "select current_database()", env=bare)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "warehouse"


def test_dw_drop_puts_a_sales_file_where_the_sensor_looks(storage, tmp_path):
    orders = tmp_path / "orders_extra.csv"
    orders.write_text("order_id,order_date\nSO-1,2026-11-20\n")
    result = dw("drop", "sales", str(orders))
    assert result.returncode == 0, result.stderr
    name = f"incoming/{datetime.now(timezone.utc).date().isoformat()}/orders_extra.csv"
    assert name in result.stdout
    blob = storage.version(name)
    assert blob is not None and b"".join(storage.chunks(blob)) == orders.read_bytes()


def test_dw_drop_puts_an_access_log_where_the_weblogs_sensor_looks(weblogs, tmp_path):
    log = tmp_path / "access_extra.log"
    log.write_text('192.0.2.1 - - [23/Nov/2026:10:15:32 +0000] "GET / HTTP/1.1" 200 512\n')
    result = dw("drop", "softcart", str(log))
    assert result.returncode == 0, result.stderr
    assert "incoming/access_extra.log" in result.stdout
    assert [f.path for f in weblogs.list("incoming/")] == ["incoming/access_extra.log"]


def test_dw_drop_refuses_a_missing_file_and_an_unknown_domain(storage, tmp_path):
    assert "is not a file" in dw("drop", "sales", str(tmp_path / "nothing.csv")).stderr
    assert "invalid choice" in dw("drop", "nowhere", str(tmp_path)).stderr


def test_dw_backfill_builds_a_range_of_days_as_one_run_on_the_instance(source, warehouse, instance):
    from test_customer_pipeline import add_customer

    from dw_platform.samples import customer as customer_sample

    source.execute(customer_sample.DDL)
    for cid, day in ((1, 10), (2, 10), (3, 11), (4, 13)):
        add_customer(source, cid, datetime(2026, 11, day, 9), email=f"c{cid}@example.com")

    result = dw("backfill", "customer", "--from", "2026-11-10", "--to", "2026-11-12")

    assert result.returncode == 0, result.stderr[-3000:]
    ids = [r[0] for r in warehouse.execute("select customer_id from gold.dim_customer_profile order by 1")]
    assert ids == [1, 2, 3]  # customer 4 is on a later day
    (run,) = instance.get_runs(dg.RunsFilter(tags={"dw/launched_by": "dw backfill"}))
    assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "customer_daily"
    assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
        "2026-11-10",
        "2026-11-12",
    )
    assert f"run {run.run_id} succeeded" in result.stderr


def test_dw_backfill_refuses_days_that_are_not_partitions_and_domains_without_a_daily_job(databases):
    before = dw("backfill", "customer", "--from", "1999-01-01", "--to", "1999-01-31")
    assert before.returncode == 2 and "has daily partitions from" in before.stderr
    backwards = dw("backfill", "customer", "--from", "2026-11-12", "--to", "2026-11-10")
    assert backwards.returncode == 2
    assert (
        dw("backfill", "sales", "--from", "2026-11-10", "--to", "2026-11-12")
        .stderr.strip()
        .endswith("has no daily job (sales_daily)")
    )
