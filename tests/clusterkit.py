"""Shared pieces of the cluster tests: a Redis of the test's own (to stop by its pid), Celery workers
started as `dw workers` starts them, and the warehouse's tables as comparable snapshots."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
from psycopg import sql

from dw_platform.devenv import embedded
from dw_platform.devenv.workers import start_worker, stop_workers
from dw_platform.lib.crypto import Cipher


class Broker:
    """A Redis server owned by one test, on a fixed port across restarts."""

    def __init__(self, location: Path):
        self.location = location
        self.password = "test-" + os.urandom(8).hex()
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self) -> None:
        self.process, self.port = embedded.start_redis(self.location, self.password, port=self.port)

    def stop(self) -> None:
        embedded.stop_process(self.process)

    @property
    def url(self) -> str:
        return embedded.redis_url(self.port, self.password)


class Workers:
    """Celery workers (the processes `dw workers` starts), logging to one file, on the settings of
    the environment they were started in."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.processes: list[subprocess.Popen] = []
        self.started = 0
        self.settings: dict[str, str] = {}

    def start(self, count: int, prefix: str = "w", wait: bool = True) -> None:
        self.settings = celery_environment()
        for _ in range(count):
            self.started += 1
            self.processes.append(start_worker(f"{prefix}{self.started}", log=self.log))
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        wait_until(lambda: self.log_path.read_text().count(" ready.") >= self.started, 180, "the workers")

    def ensure(self, count: int) -> None:
        """`count` live workers on the environment's Celery settings: the pool started again if a
        worker is gone or the settings changed (tests sharing one cluster take turns on it)."""
        if self.settings == celery_environment() and all(w.poll() is None for w in self.processes):
            return
        stop_workers(self.processes, grace_s=30)
        self.processes = []
        self.start(count)

    def stop(self) -> None:
        stop_workers(self.processes, grace_s=30)
        self.log.close()


def celery_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("DW_CELERY_")}


@contextmanager
def cluster(tmp_path: Path, monkeypatch, workers: int = 2, wait: bool = True) -> Iterator[tuple[Broker, Workers]]:
    """DW_EXECUTOR=celery, a Redis of the test's own and `workers` Celery workers, on the test's
    settings (set them before); `wait=False` yields while the workers start (`Workers.wait_ready`)."""
    broker = Broker(tmp_path / "redis")
    broker.start()
    monkeypatch.setenv("DW_EXECUTOR", "celery")
    monkeypatch.setenv("DW_REDIS_URL", broker.url)
    pool = Workers(tmp_path / "workers.log")
    try:
        pool.start(workers, wait=wait)
        yield broker, pool
    finally:
        pool.stop()
        broker.stop()


def fresh_warehouse() -> None:
    """An empty warehouse database (same name: dbt's manifest names it), for the next load."""
    with embedded.admin_connection("postgres") as conn:
        conn.execute('drop database if exists "warehouse" with (force)')
        conn.execute(f'create database "warehouse" owner {embedded.PIPELINE_ROLE}')


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def step_workers(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, set[str]]:
    """Per run, the Celery workers (hostnames) that executed its steps, from the event log."""
    found: dict[str, set[str]] = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or not event.is_engine_event:
                continue
            metadata = event.engine_event_data.metadata or {}
            if "Celery worker" in metadata:
                found.setdefault(run_id, set()).add(str(metadata["Celery worker"].value))
    return found


def step_pids(instance: dg.DagsterInstance, run_ids: list[str]) -> set[int]:
    """The pids of the processes that started the runs' steps (STEP_START events)."""
    return {
        entry.dagster_event.pid
        for run_id in run_ids
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    }


# Columns a load or build fills with its own time or ids: equal data differs there between runs.
VOLATILE = re.compile(r"^_bronze_(load_ts|batch_id)$|_(at|ts|timestamp)$|^(dbt_|_dbt)|^(batch_id|loaded_at)$")


def snapshot(conn: psycopg.Connection, schemas=("bronze", "silver", "gold")) -> dict[str, list[tuple]]:
    """Every table of `schemas` but the ledgers and the incremental models' bookkeeping of what
    they replaced (`<model>_replaced_<column>`, macros/changed_keys.sql: it depends on the order
    the runs happened in): its rows (sorted) without the volatile columns, encrypted values
    decrypted (a Fernet token differs at every encryption of the same value)."""
    cipher = Cipher(os.environ["DW_SALES_FERNET_KEYS"])

    def plain(value):
        return cipher.decrypt(value) if isinstance(value, str) and value.startswith("gAAAAA") else value

    tables = conn.execute(
        "select table_schema, table_name from information_schema.tables where table_schema = any(%s) "
        "and table_type = 'BASE TABLE' and table_name not in ('batch_ledger', 'etl_watermarks') "
        "and table_name not like '%%\\_replaced\\_%%' order by 1, 2",
        (list(schemas),),
    ).fetchall()
    result = {}
    for schema, table in tables:
        columns = [
            name
            for (name,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
                "order by ordinal_position",
                (schema, table),
            ).fetchall()
            if not VOLATILE.search(name)
        ]
        rows = conn.execute(
            sql.SQL("select {} from {}").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
                sql.Identifier(schema, table),
            )
        ).fetchall()
        rows = [tuple(plain(v) for v in row) for row in rows]
        result[f"{schema}.{table}"] = sorted(rows, key=lambda r: tuple("" if v is None else v for v in r))
    return result
