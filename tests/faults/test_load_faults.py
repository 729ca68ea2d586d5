"""Faults around a bronze load on the real servers: the run process killed mid-load, the
warehouse connection cut, the whole PostgreSQL server killed. Each ends with 0 rows lost, 0
duplicated, a ledger entry that tells the truth and a failure that is retried when retrying helps."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
from faultkit import (
    ROWS,
    copying_backend,
    materialize,
    resources,
    retried,
    seed,
    session_resources,
    step_failure,
)

from dw_platform.defs.customer.assets import CUSTOMER_PROFILE_RAW
from dw_platform.devenv import embedded

KILLED_RUN = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from faultkit import materialize, session_resources
    materialize(session_resources())
""")


def test_a_run_killed_mid_load_commits_nothing_frees_its_lock_and_is_marked_abandoned(databases, source, warehouse):
    seed(source)
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, os.path.dirname(__file__)],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with embedded.admin_connection("postgres") as admin:
        backend = copying_backend(admin, databases["warehouse"])
        run.send_signal(signal.SIGKILL)
        run.wait()
        # The server notices the dead client (client_connection_check_interval) and rolls back.
        deadline = time.monotonic() + 30
        while psutil.pid_exists(backend) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not psutil.pid_exists(backend), "the killed run's session still holds its transaction"

    assert warehouse.execute("select count(*) from bronze.customer_profile_raw").fetchone()[0] == 0
    assert warehouse.execute("select status from bronze.batch_ledger").fetchall() == [("running",)]

    result = materialize(session_resources())  # the partition's lock is free again

    assert result.success
    assert warehouse.execute(
        "select count(*), count(distinct customer_id) from bronze.customer_profile_raw"
    ).fetchone() == (ROWS, ROWS)
    assert sorted(warehouse.execute("select status, rows_loaded from bronze.batch_ledger").fetchall()) == [
        ("abandoned", 0),
        ("succeeded", ROWS),
    ]


def test_a_cut_warehouse_connection_fails_the_attempt_which_is_retried_to_success(databases, source, warehouse):
    seed(source)
    outcome = {}
    load = threading.Thread(target=lambda: outcome.setdefault("result", materialize(session_resources(), retries=1)))
    load.start()
    with embedded.admin_connection("postgres") as admin:
        backend = copying_backend(admin, databases["warehouse"])
        admin.execute("select pg_terminate_backend(%s)", (backend,))
    load.join(timeout=120)

    result = outcome["result"]
    assert retried(result) and result.success
    assert warehouse.execute(
        "select count(*), count(distinct customer_id) from bronze.customer_profile_raw"
    ).fetchone() == (ROWS, ROWS)
    # The failed attempt is recorded on a fresh connection (its own was the one cut), with the
    # real time it ended.
    failed, succeeded = warehouse.execute(
        "select status, error, started_at, finished_at from bronze.batch_ledger order by started_at"
    ).fetchall()
    assert failed[0] == "failed" and "nothing was committed" in failed[1]
    assert "terminating connection" in failed[1] or "server closed the connection" in failed[1]
    assert succeeded[0] == "succeeded" and succeeded[3] > succeeded[2] > failed[3]


def test_killing_the_postgresql_server_mid_load_fails_the_run_instead_of_crashing_it(tmp_path):
    import pgserver

    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="delete")
    try:
        info = server.get_postmaster_info()
        host, port = str(info.socket_dir), info.port
        with embedded.psycopg.connect(
            host=host, port=port, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            admin.execute("create database warehouse")
            admin.execute("create database crm")
        with embedded.psycopg.connect(host=host, port=port, user="postgres", dbname="crm", autocommit=True) as crm:
            seed(crm)
        odbc = embedded.odbc_connection_string(host, port, "crm", "postgres", "")
        res = resources(host, port, "postgres", "", "warehouse", odbc)
        outcome = {}
        load = threading.Thread(target=lambda: outcome.setdefault("result", materialize(res, retries=1)))
        load.start()
        with embedded.psycopg.connect(
            host=host, port=port, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            copying_backend(admin, "warehouse")
        postmaster = psutil.Process(info.pid)
        for process in [postmaster, *postmaster.children(recursive=True)]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass  # a backend that exited with its postmaster
        load.join(timeout=120)

        # We are still here (a driver crash stays in the reader process); the step failed with a
        # reason the retry policy retries, and the retry failed too: the server is still down.
        result = outcome["result"]
        assert not result.success and retried(result)
        assert "cannot connect to the warehouse" in step_failure(result).user_failure_data.description

        deadline = time.monotonic() + 30  # the killed postmaster lingers a moment as a zombie
        while psutil.pid_exists(postmaster.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with pgserver.PostgresServer._lock:
            server.ensure_postgres_running()
        info = server.get_postmaster_info()
        res = resources(
            str(info.socket_dir),
            info.port,
            "postgres",
            "",
            "warehouse",
            embedded.odbc_connection_string(str(info.socket_dir), info.port, "crm", "postgres", ""),
        )
        assert materialize(res).success
        with embedded.psycopg.connect(
            host=str(info.socket_dir), port=info.port, user="postgres", dbname="warehouse", autocommit=True
        ) as wh:
            assert wh.execute(f"select count(*) from {CUSTOMER_PROFILE_RAW.qualified_name}").fetchone()[0] == ROWS
            statuses = sorted(r[0] for r in wh.execute("select status from bronze.batch_ledger"))
            # The killed attempt could write nothing (its server was gone): its running entry is
            # closed as abandoned by the next load.
            assert statuses == ["abandoned", "succeeded"]
    finally:
        try:
            server.cleanup()
        except psutil.NoSuchProcess:
            pass  # the test failed before it restarted the killed server
