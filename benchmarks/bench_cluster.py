"""The same work in process and on Celery workers, side by side: a burst of sales blobs (one
`sales_ingest` run each, 4 runs at a time as the run queue launches them) and a 7-day customer
backfill (one `customer_daily` run over the range).

    .venv/bin/python -m benchmarks.bench_cluster [--blobs 20] [--blob-rows 2000] [--customer-rows 20000]

Runs on its own embedded servers under `.dw/bench-cluster` (never on servers from the environment
or `.env`) and a Redis of its own there. Each mode starts from an empty warehouse and fresh blobs:

  in_process   DW_EXECUTOR=in_process: every step in its run's process (the default).
  1 worker     DW_EXECUTOR=celery with 1 Celery worker (`dw workers 1`).
  2 workers    DW_EXECUTOR=celery with 2 workers.

Wall time per workload, and the CPU seconds of each process over both: the run processes (the
launched runs; dbt's processes in process), each worker (with its step process and dbt), the
PostgreSQL server, Redis and Azurite. Every run must succeed (exit code 1 otherwise). This machine
has 2 cores shared with whatever else runs: the point is that work spreads over the workers, not a
speed-up here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import sys
import time
from datetime import date
from pathlib import Path

import psutil

MODES = (("in_process", 0), ("1 worker", 1), ("2 workers", 2))
END = date(2026, 11, 17)
RANGE = {"dagster/asset_partition_range_start": "2026-11-10", "dagster/asset_partition_range_end": "2026-11-16"}


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, the children it has reaped and its living descendants."""
    try:
        root = psutil.Process(pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                t = process.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def reaped_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def postmaster_pid() -> int:
    pgdata = Path(os.environ["DW_HOME"]) / "pg"
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def fresh_warehouse() -> None:
    from dw_platform.devenv import embedded

    with embedded.admin_connection("postgres") as conn:
        conn.execute('drop database if exists "warehouse" with (force)')
        conn.execute(f'create database "warehouse" owner {embedded.PIPELINE_ROLE}')


def upload_blobs(container: str, count: int, rows: int) -> list[str]:
    from dw_platform.defs.sales.partitions import INCOMING
    from dw_platform.lib.blob import BlobStorage
    from dw_platform.samples import sales

    storage = BlobStorage(container=container, connection_string=os.environ["DW_BLOB_CONNECTION_STRING"])
    storage.ensure_container()
    keys = [f"burst/orders_{i:02d}.csv" for i in range(count)]
    for i, key in enumerate(keys):
        data = sales.rows(rows, date(2026, 11, 10 + i % 7), seed=100 + i, first_id=1 + rows * i)
        storage.upload(INCOMING + key, sales.to_csv(sales.HEADER, list(data)))
    return keys


def run_mode(name: str, workers: int, args, redis_url: str) -> dict:
    import dagster as dg

    from dw_platform.defs.sales.partitions import sales_blobs
    from dw_platform.devenv.runs import run_jobs
    from dw_platform.devenv.workers import start_worker, stop_workers

    fresh_warehouse()
    os.environ["DW_SALES_CONTAINER"] = f"bench-{workers}-{int(time.time())}"
    keys = upload_blobs(os.environ["DW_SALES_CONTAINER"], args.blobs, args.blob_rows)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(sales_blobs.name, keys)
    os.environ["DW_EXECUTOR"] = "celery" if workers else "in_process"
    os.environ["DW_REDIS_URL"] = redis_url
    log = open(Path(os.environ["DW_HOME"]) / f"workers-{workers}.log", "ab")
    pool = [start_worker(f"bench{i}", log=log) for i in range(1, workers + 1)]
    while (Path(os.environ["DW_HOME"]) / f"workers-{workers}.log").read_text().count(" ready.") < workers:
        time.sleep(0.5)
    servers = {"PostgreSQL": postmaster_pid(), "Redis": args.redis_pid, "Azurite": args.azurite_pid}
    before = {label: tree_cpu(pid) for label, pid in servers.items()}
    children_before = reaped_children_cpu()
    print(f"{name}: 7-day customer backfill ...", flush=True)
    started = time.monotonic()
    backfill = run_jobs([("customer_daily", None, RANGE)], processes=1)
    backfill_s = time.monotonic() - started
    print(f"{name}: burst of {args.blobs} sales blobs ...", flush=True)
    started = time.monotonic()
    burst = run_jobs([("sales_ingest", key, None) for key in keys], processes=4)
    burst_s = time.monotonic() - started
    cpu = {"run processes": reaped_children_cpu() - children_before}
    for i, worker in enumerate(pool, 1):
        cpu[f"worker {i}"] = tree_cpu(worker.pid)
    cpu.update({label: tree_cpu(pid) - before[label] for label, pid in servers.items()})
    stop_workers(pool)
    log.close()
    failed = [run_id for run_id, ok in backfill + burst if not ok]
    return {"mode": name, "backfill_s": backfill_s, "burst_s": burst_s, "cpu": cpu, "failed": failed}


def report(results: list[dict], blobs: int) -> None:
    labels = ["run processes", "worker 1", "worker 2", "PostgreSQL", "Redis", "Azurite"]
    print()
    print(
        f"{'mode':<11} {'backfill s':>10} {'burst s':>8}  " + "  ".join(f"{label + ' CPU s':>17}" for label in labels)
    )
    for r in results:
        cells = "  ".join(f"{r['cpu'][label]:>17.1f}" if label in r["cpu"] else f"{'-':>17}" for label in labels)
        print(f"{r['mode']:<11} {r['backfill_s']:>10.1f} {r['burst_s']:>8.1f}  {cells}")
    base, one, two = results
    print()
    print(
        f"burst of {blobs}: 2 workers / 1 worker = {two['burst_s'] / one['burst_s']:.2f}x the wall time, "
        f"2 workers / in process = {two['burst_s'] / base['burst_s']:.2f}x; "
        f"backfill: 2 workers / in process = {two['backfill_s'] / base['backfill_s']:.2f}x"
    )
    share = two["cpu"]["worker 1"] / max(two["cpu"]["worker 1"] + two["cpu"]["worker 2"], 1e-9)
    print(f"2 workers: worker 1 did {share:.0%} of the workers' CPU, worker 2 {1 - share:.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blobs", type=int, default=20)
    parser.add_argument("--blob-rows", type=int, default=2_000)
    parser.add_argument("--customer-rows", type=int, default=20_000)
    args = parser.parse_args(argv)

    from dw_platform.cli import prepare_dbt
    from dw_platform.devenv import embedded
    from dw_platform.samples import customer

    for key in [k for k in os.environ if k.startswith(("DW_", "DAGSTER_PG_URL", "DAGSTER_HOME"))]:
        del os.environ[key]
    os.environ["DW_HOME"] = str(embedded.PROJECT_ROOT / ".dw" / "bench-cluster")
    with embedded.services(env_file=None):
        prepare_dbt()
        with embedded.admin_connection("source_crm") as source:
            source.execute("drop table if exists dbo.customer_profile")
            print(f"seeding {args.customer_rows:,} customer rows over 7 days ...", flush=True)
            customer.seed(source, rows=args.customer_rows, end_date=END, days=7)
        home = Path(os.environ["DW_HOME"])
        password = secrets.token_urlsafe(24)
        redis, port = embedded.start_redis(home / "redis", password)
        args.redis_pid = redis.pid
        args.azurite_pid = json.loads((home / "azurite" / "endpoint.json").read_text())["pid"]
        try:
            url = embedded.redis_url(port, password)
            results = [run_mode(name, workers, args, url) for name, workers in MODES]
        finally:
            embedded.stop_process(redis)
    report(results, args.blobs)
    failed = [run_id for r in results for run_id in r["failed"]]
    if failed:
        print(f"FAILED runs: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
