"""`dw` as a newcomer meets it: every command and option explains itself, `dw sql` opens psql on
the warehouse (starting the embedded services when nothing is configured), `dw drop` puts a file
where its domain's sensor looks."""

import argparse
import io
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import dagster as dg

from dw_platform.cli import parser
from dw_platform.devenv import embedded
from dw_platform.devenv.console import split_output


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


def test_dw_dev_stops_at_once_when_its_port_is_taken_and_says_how_to_choose_another(server):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = dw("dev", "--port", str(port))
    assert result.returncode == 2
    assert time.monotonic() - started < 60  # nothing was started first
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"make dev PORT={port + 1}" in result.stderr
    assert "UI at" not in result.stderr


def test_the_dev_console_shows_warnings_and_errors_with_their_tracebacks_and_nothing_else():
    output = [
        "2026-11-23 10:15:32 +0000 - dagster - DEBUG - customer_daily - 1f2e - 4242 - STEP_START - Started execution",
        "2026-11-23 10:15:33 +0000 - dagster - INFO - customer_daily - 1f2e - dbt_models - dbt builds the window",
        "12 of 46 PASS not_null_customer_profile_standardized_customer_id .......... [PASS in 0.10s]",
        "/work/.venv/lib/python3.11/site-packages/dagster/_core/decorator_utils.py:232: BetaWarning: in beta",
        "  return fn(*args, **kwargs)",
        "\x1b[33m2026-11-23 10:15:34 +0000 - dagster - WARNING - customer_daily - 1f2e - no column lineage for dbt"
        " model x\x1b[0m",
        "13 of 46 START test unique_dim_customer_profile_customer_sk ............... [RUN]",
        "2026-11-23 10:15:35 +0000 - dagster.daemon.SensorDaemon - ERROR - Sensor daemon caught an error",
        "Traceback (most recent call last):",
        '  File "sensors.py", line 3, in tick',
        "psycopg.OperationalError: connection refused",
        "",
        "2026-11-23 10:15:36 +0000 - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor: automation",
        "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 3000): address already in use",
        "INFO:     Started server process [4242]",
        "dw dev: the code server exited (code -9); starting it again (the runs it ran are failed once it serves)",
    ]
    log, console = io.BytesIO(), io.StringIO()

    split_output(((line + "\n").encode() for line in output), log, console)

    assert log.getvalue().decode().splitlines() == output  # everything in the log file
    shown = console.getvalue().splitlines()
    assert [line for line in output if line in shown or line.replace("\x1b[33m", "") in shown] == [
        output[5],
        *output[7:12],
        output[13],
        output[15],
    ], shown


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
