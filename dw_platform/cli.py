"""`dw`: run the platform. Without connection settings it starts the embedded default first."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from dw_platform.lib import embedded
from dw_platform.lib.warehouse import server_connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="seed sample sources, materialize the whole graph, print a summary")
    dev = sub.add_parser("dev", help="start the Dagster UI and daemon on the same services")
    dev.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    # A plain SIGTERM would skip cleanup: make it unwind like Ctrl-C, so servers and children stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    with embedded.services() as embedded_in_use:
        prepare_dbt()
        if args.command == "demo":
            return demo(embedded_in_use)
        # Started from DAGSTER_HOME so the instance reads that folder's dagster.yaml (a link to ours).
        workspace = embedded.PROJECT_ROOT / "workspace.yaml"
        dagster_dev = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(args.port)],
            cwd=os.environ["DAGSTER_HOME"],
        )
        try:
            return dagster_dev.wait()
        finally:
            if dagster_dev.poll() is None:
                dagster_dev.terminate()
                dagster_dev.wait(timeout=60)


def prepare_dbt() -> None:
    """Parse the dbt project so its manifest matches the code (the definitions read it)."""
    from dw_platform.lib.dbt import DBT_PROJECT

    DBT_PROJECT.preparer.prepare(DBT_PROJECT)


def demo(embedded_in_use: bool) -> int:
    import dagster as dg

    from dw_platform.definitions import defs
    from dw_platform.samples import customer as customer_sample

    if not embedded_in_use:
        print("dw demo writes sample source data, so it runs only on the embedded default; "
              "unset DW_PG_HOST (and remove it from .env) to use it.", file=sys.stderr)
        return 2

    with server_connection("source_crm") as source:
        rows = customer_sample.seed(source)
        first_day, last_day = customer_sample.day_range(source)
    print(f"customer source: {rows:,} rows in {customer_sample.SOURCE_TABLE}, modified {first_day} .. {last_day}")

    job = defs().resolve_job_def("customer_daily")
    tags = {
        "dagster/asset_partition_range_start": first_day.isoformat(),
        "dagster/asset_partition_range_end": last_day.isoformat(),
    }
    print(f"running job customer_daily for partitions {first_day} .. {last_day} as one run ...")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        tags=tags,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )

    _print_summary(result)
    return 0 if result.success else 1


def _print_summary(result) -> None:
    evaluations = result.get_asset_check_evaluations()
    passed = [e for e in evaluations if e.passed]
    failed = [e for e in evaluations if not e.passed]
    print()
    print(f"run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}")
    with server_connection(os.environ["DW_PG_DATABASE"]) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('bronze', 'silver', 'gold') and table_type = 'BASE TABLE' "
            "order by array_position(array['bronze', 'silver', 'gold'], table_schema::text), table_name"
        ).fetchall()
        print("rows per table:")
        for schema, name in tables:
            count = conn.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[0]
            print(f"  {schema}.{name:<40} {count:>10,}")
    print(f"checks: {len(passed)} passed, {len(failed)} failed")
    for e in failed:
        print(f"  FAILED [{e.severity.value}] {e.asset_key.to_user_string()} :: {e.check_name}")
    print()
    print("next: `make dev` opens the Dagster UI at http://127.0.0.1:3000 (runs, checks, backfills);")
    print(f"      the warehouse is database {os.environ['DW_PG_DATABASE']!r} on {os.environ['DW_PG_HOST']}.")


if __name__ == "__main__":
    sys.exit(main())
