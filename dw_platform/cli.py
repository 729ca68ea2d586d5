"""`dw`: run the platform. Without connection settings it starts the embedded default first."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone

from dw_platform.lib import embedded
from dw_platform.lib.warehouse import server_connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="seed sample sources, materialize the whole graph, print a summary")
    dev = sub.add_parser("dev", help="start the Dagster UI and daemon on the same services")
    dev.add_argument("--port", type=int, default=3000)
    rotate = sub.add_parser("rotate-keys", help="re-encrypt a domain's sensitive columns under its newest key")
    rotate.add_argument("domain", choices=["sales"])
    args = parser.parse_args(argv)
    # A plain SIGTERM would skip cleanup: make it unwind like Ctrl-C, so servers and children stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    with embedded.services() as embedded_in_use:
        if args.command == "rotate-keys":
            return rotate_keys(args.domain)
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

    sales_ok, sales_lines = _sales_demo(defs(), dg.DagsterInstance.get())
    video_ok, video_lines = _video_demo(defs(), dg.DagsterInstance.get())
    _print_summary(result, sales_lines + video_lines)
    return 0 if result.success and sales_ok and video_ok else 1


def _video_demo(definitions, instance) -> tuple[bool, list[str]]:
    """Land two days of sample video files (users, viewing sessions, content JSON; the second
    day's content has a new field) in the video landing zone, then run the job `video_daily`
    for each day: bronze, flattening, checks, silver and gold."""
    from datetime import timedelta

    from dw_platform.lib.landing import LandingZone
    from dw_platform.samples import video as video_sample

    zone = LandingZone(local_folder=os.environ.get("DW_VIDEO_LANDING_DIR", ""),
                       container=os.environ.get("DW_VIDEO_CONTAINER", "video"),
                       connection_string=os.environ.get("DW_BLOB_CONNECTION_STRING", ""))
    landing = zone.landing()
    # Daily partitions exist for complete days only: the two days before today.
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=2), today - timedelta(days=1)]
    for day in days:
        for name, data in video_sample.sample_files(day, extra_field=day == days[-1]).items():
            landing.put(f"{day.isoformat()}/{name}", data)
    where = os.environ.get("DW_VIDEO_LANDING_DIR") or f"blob container {zone.container!r}"
    print(f"video: landed users.csv, viewing_sessions.csv and content.json for {days[0]} and {days[1]} in {where}")
    job = definitions.resolve_job_def("video_daily")
    ok, lines = True, ["video days:"]
    for day in days:
        print(f"running job video_daily for partition {day} ...")
        run = job.execute_in_process(instance=instance, partition_key=day.isoformat(),
                                     run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                                     raise_on_error=False)
        failed = [e.check_name for e in run.get_asset_check_evaluations() if not e.passed]
        lines.append(f"  {day}: {'SUCCESS' if run.success else 'FAILURE'}, "
                     f"{len(run.get_asset_check_evaluations())} checks, failed: {', '.join(failed) or 'none'}")
        ok = ok and run.success
    return ok, lines


def _sales_demo(definitions, instance) -> tuple[bool, list[str]]:
    """Upload the sample sales files to incoming/, let the sensor's logic pick them up, and run
    the job `sales_ingest` for each run request, as the daemon would. The malformed sample is
    expected to fail its run (and land in failed/); any other failure fails the demo."""
    import dagster as dg

    from dw_platform.defs.sales.partitions import INCOMING, sales_blobs
    from dw_platform.defs.sales.sensors import scan
    from dw_platform.lib.blob import BlobStorage
    from dw_platform.samples import sales as sales_sample

    storage = BlobStorage(container=os.environ.get("DW_SALES_CONTAINER", "sales"),
                          connection_string=os.environ["DW_BLOB_CONNECTION_STRING"])
    storage.ensure_container()
    files = sales_sample.sample_files(datetime.now(timezone.utc).date())
    for name, data in files.items():
        storage.upload(INCOMING + name, data)
    print(f"sales: uploaded {len(files)} sample CSV files to {storage.container}/{INCOMING}")

    tick = scan(dg.build_sensor_context(instance=instance), storage)
    for request in tick.dynamic_partitions_requests:
        instance.add_dynamic_partitions(sales_blobs.name, list(request.partition_keys))
    job = definitions.resolve_job_def("sales_ingest")
    ok, lines, passed, failed = True, [], 0, []
    for request in tick.run_requests:
        key = request.partition_key
        print(f"running job sales_ingest for blob {key} ...")
        run = job.execute_in_process(instance=instance, partition_key=key, tags=request.tags,
                                     run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                                     raise_on_error=False)
        expected_failure = key.endswith("_malformed.csv")
        if run.success:
            meta = run.get_asset_materialization_events()[0].materialization.metadata
            lines.append(f"  {key:<45} loaded {meta['dagster/row_count'].value:>5,}, "
                         f"quarantined {meta['rows_quarantined'].value:>3,} -> processed/")
        else:
            failure = next((e for e in run.all_events if e.event_type_value == "STEP_FAILURE"), None)
            reason = failure.step_failure_data.user_failure_data.description if failure and \
                failure.step_failure_data.user_failure_data else "see the run's logs"
            lines.append(f"  {key:<45} FAILED{' (as intended)' if expected_failure else ''}: {reason} -> failed/")
        ok = ok and (run.success != expected_failure)
        for evaluation in run.get_asset_check_evaluations():
            if evaluation.passed:
                passed += 1
            else:
                failed.append(f"    FAILED {evaluation.asset_key.to_user_string()} :: {evaluation.check_name} ({key})")
    lines.append(f"sales checks: {passed} passed, {len(failed)} failed")
    return ok, lines + failed


def rotate_keys(domain: str) -> int:
    """Re-encrypt every sensitive value under the first key of DW_SALES_FERNET_KEYS."""
    from dw_platform.defs.sales.rotation import rotate_keys as rotate
    from dw_platform.lib.crypto import Cipher

    keys = os.environ.get("DW_SALES_FERNET_KEYS")
    if not keys:
        print("DW_SALES_FERNET_KEYS is not set: put the new key first, the old keys after it.", file=sys.stderr)
        return 2
    cipher = Cipher(keys)
    with server_connection(os.environ["DW_PG_DATABASE"]) as conn:
        counts = rotate(conn, cipher)
    print(f"{domain}: re-encrypted {counts['rows_rotated']:,} rows and {counts['quarantine_rows_rotated']:,} "
          f"quarantined lines of {counts['blobs']:,} blobs under the newest key; the old keys can now be removed.")
    return 0


def _print_summary(result, sales_lines: list[str]) -> None:
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
    print("sales blobs (container incoming/ -> processed/ or failed/, each with a .report.json):")
    for line in sales_lines:
        print(line)
    print(f"customer checks: {len(passed)} passed, {len(failed)} failed")
    for e in failed:
        print(f"  FAILED [{e.severity.value}] {e.asset_key.to_user_string()} :: {e.check_name}")
    print()
    print("next: `make dev` opens the Dagster UI at http://127.0.0.1:3000 (runs, checks, backfills);")
    print(f"      the warehouse is database {os.environ['DW_PG_DATABASE']!r} on {os.environ['DW_PG_HOST']}.")


if __name__ == "__main__":
    sys.exit(main())
