"""Shared pieces of the fault tests: a large source to load, the bronze asset in a job that
retries like the domain jobs, and finding the warehouse session that is COPYing."""

import itertools
import os
import time
from datetime import date, timedelta

import dagster as dg

from dw_platform.defs.customer.assets import customer_profile_raw
from dw_platform.lib.odbc import OdbcSource
from dw_platform.lib.warehouse import PostgresWarehouse
from dw_platform.samples import customer as customer_sample

DAY = date(2026, 11, 10)
ROWS = 300_000


def seed(source, rows: int = ROWS) -> None:
    source.execute(customer_sample.DDL)
    columns = ", ".join(customer_sample.COLUMNS)
    with source.cursor().copy(f"copy dbo.customer_profile ({columns}) from stdin") as copy:
        generated = itertools.islice(customer_sample.generate(rows, DAY + timedelta(days=1), days=1), rows)
        for i, row in enumerate(generated):
            copy.write_row((i + 1, *row[1:]))  # unique ids: no exact duplicates, one version each


def resources(host: str, port: int, user: str, password: str, warehouse_db: str, source_odbc: str) -> dict:
    return {
        "warehouse": PostgresWarehouse(host=host, port=port, user=user, password=password, database=warehouse_db),
        "customer_source": OdbcSource(connection_string=source_odbc, dialect="postgresql", name="customer_crm"),
    }


def session_resources() -> dict:
    return resources(os.environ["DW_PG_HOST"], int(os.environ["DW_PG_PORT"]), os.environ["DW_PG_USER"],
                     os.environ["DW_PG_PASSWORD"], os.environ["DW_PG_DATABASE"], os.environ["DW_CUSTOMER_ODBC"])


def materialize(res: dict, retries: int = 0) -> dg.ExecuteInProcessResult:
    """The bronze asset for DAY, in a job that retries failed steps `retries` times at once when
    the failure allows it (as the domain jobs do, with backoff)."""
    job = dg.define_asset_job("load", [customer_profile_raw], partitions_def=customer_profile_raw.partitions_def,
                              op_retry_policy=dg.RetryPolicy(max_retries=retries))
    definitions = dg.Definitions(assets=[customer_profile_raw], jobs=[job], resources=res)
    return definitions.resolve_job_def("load").execute_in_process(partition_key=DAY.isoformat(), raise_on_error=False)


def retried(result: dg.ExecuteInProcessResult) -> bool:
    return any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def copying_backend(admin, database: str, timeout_s: float = 60) -> int:
    """The pid of the session COPYing into bronze in `database`, once it streams."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = admin.execute(
            "select pid from pg_stat_activity where datname = %s and state = 'active' and query ilike 'copy%%'",
            (database,)).fetchone()
        if row:
            return row[0]
        time.sleep(0.05)
    raise AssertionError("the load never started copying")


def step_failure(result: dg.ExecuteInProcessResult):
    return next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data


