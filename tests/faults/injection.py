"""Fault injection on the real servers: a job run in a child process (to be killed by its pid),
an Azurite of the test's own (stopped and started again by its pid), the warehouse's COPY progress."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from dw_platform.lib import embedded
from dw_platform.lib.blob import BlobStorage, azurite_connection_string
from dw_platform.lib.warehouse import PostgresWarehouse

CHILD = Path(__file__).with_name("run_job.py")


class Emulator:
    """An Azurite blob service owned by one test, on a fixed port across restarts."""

    def __init__(self, location: Path):
        self.location = location
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self) -> None:
        self.process, self.port = embedded.start_azurite(self.location, port=self.port)

    def stop(self) -> None:
        """Stop the emulator by its pid, gracefully (SIGTERM): it saves its state first."""
        embedded.stop_process(self.process)

    def settle(self) -> None:
        """Make what was uploaded so far survive a crash: Azurite saves its blob index only every
        5 s or on a graceful stop (a real storage account has it durable on upload already)."""
        self.stop()
        self.start()

    def crash(self) -> None:
        """Kill the emulator by its pid (SIGKILL): storage is gone at once, mid-request."""
        self.process.kill()
        self.process.wait()

    def settings(self) -> dict:
        """Storage settings for this emulator, with the SDK's retries cut to one (after 3 s) so an
        outage outlasts them in seconds rather than a minute, and small chunks so a file is read in
        many requests."""
        return {"connection_string": azurite_connection_string(self.port), "retries": 1, "retry_backoff_s": 0,
                "max_chunk_bytes": 64 * 1024}

    def storage(self, container: str) -> BlobStorage:
        storage = BlobStorage(container=container, **self.settings())
        storage.ensure_container()
        return storage


def warehouse_resource() -> PostgresWarehouse:
    return PostgresWarehouse(host=os.environ["DW_PG_HOST"], port=int(os.environ["DW_PG_PORT"]),
                             user=os.environ["DW_PG_USER"], database=os.environ["DW_PG_DATABASE"])


def start_child_run(job: str, partition_key: str, tags: dict[str, str]) -> subprocess.Popen:
    """Run `job` of the code location for one partition in a child process, on the session's instance."""
    return subprocess.Popen([sys.executable, str(CHILD), job, partition_key, json.dumps(tags)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def copied_rows(conn, database: str) -> int:
    """Rows a COPY into `database` has received so far (uncommitted, invisible to queries)."""
    return conn.execute("select coalesce(sum(tuples_processed), 0) from pg_stat_progress_copy where datname = %s",
                        (database,)).fetchone()[0]


def wait_until(condition, timeout_s: float = 120, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.02)


def fast_retry_job(name: str, assets: list, resources: dict, max_retries: int, delay: float):
    """A job of the same name and assets as the code location's, but with short retry delays
    (the code location's wait 30 s, 60 s, 120 s), so a test sees a retry in seconds."""
    job = dg.define_asset_job(name, selection=dg.AssetSelection.assets(*assets),
                              op_retry_policy=dg.RetryPolicy(max_retries=max_retries, delay=delay))
    return dg.Definitions(assets=assets, jobs=[job], resources=resources).resolve_job_def(name)
