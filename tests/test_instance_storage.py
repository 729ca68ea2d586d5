"""The dev instance's storage (dw_platform/devenv/instance.py) on a real PostgreSQL: a process's
reads and writes of runs and events share one held connection each instead of connecting for each
statement, a connection
the server dropped (a restart) costs a reconnect, not a failed statement, and disposing the
instance closes what it held."""

import os
import time

import dagster as dg
from sqlalchemy.engine import make_url

from dw_platform.devenv import embedded


def server_pids(database: str) -> set[int]:
    """The server processes connected to `database`."""
    with embedded.admin_connection("postgres") as conn:
        rows = conn.execute("select pid from pg_stat_activity where datname = %s", (database,))
        return {pid for (pid,) in rows}


def test_an_instance_holds_one_connection_per_storage_reconnects_after_a_drop_and_closes_them_on_dispose(
    dagster_instance,
):
    database = make_url(os.environ["DAGSTER_PG_URL"]).database
    dagster_instance.dispose()
    assert not server_pids(database)

    instance = dg.DagsterInstance.from_ref(dagster_instance.get_ref())
    seen = set()
    for _ in range(20):
        instance.get_runs(limit=1)
        seen |= server_pids(database)
    assert 1 <= len(seen) <= 2, f"20 reads took {len(seen)} server connections (one per statement before)"

    with embedded.admin_connection("postgres") as conn:  # the server drops them, as a restart would
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (database,))
    assert instance.get_runs(limit=1) == [], "the next read reconnects"

    instance.dispose()
    deadline = time.monotonic() + 10
    while server_pids(database) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server_pids(database), "the disposed instance left connections open"
