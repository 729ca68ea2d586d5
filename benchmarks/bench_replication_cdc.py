"""Change data capture end to end: source commit -> visible in Iceberg, with the sensor running.

    .venv/bin/python -m benchmarks.bench_replication_cdc [--changes N] [--rate R] [--txn T]

Starts fresh embedded servers under `.dw/bench-replication-cdc`, seeds `bench_cdc` (accounts:
200,000 rows, bigint key; entries: 100,000 rows, composite key), bulk-loads it, then starts the
real Dagster daemon on the project's workspace with the sensor `replication_cdc_source_app`
switched on (10 s interval; each run a separate process, as in production). A workload thread
commits N changes (default 200,000: 40% inserts, 45% updates, 15% deletes over both tables) in
transactions of T changes at about R changes/s. When everything is applied it reports:

- changes/s: captured (slot -> event log: decoding, envelopes, COPY) over the runs' capture time,
  applied (event log -> Iceberg commits) over the applied micro-batches' time, and both together;
  the runs' wall time (process start, checks) beside it;
- end-to-end lag per change: the Iceberg snapshot that made it visible (its summary records the
  offsets it holds; its timestamp when it was written) minus the source commit time (pgoutput's
  commit timestamp), p50/p95/max;
- that every table equals its source (rows and content hash).

No assertions: exit 0 when the run completed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time

DATABASE = "bench_cdc"
JOB = "replication_cdc_source_app"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=4_000, help="changes per second the workload commits")
    parser.add_argument("--txn", type=int, default=500, help="changes per source transaction")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args(argv)

    from dw_platform.devenv import embedded

    for key in [k for k in os.environ if k.startswith(("DW_", "DAGSTER_PG_URL", "DAGSTER_HOME"))]:
        del os.environ[key]
    home = embedded.PROJECT_ROOT / ".dw" / "bench-replication-cdc"
    shutil.rmtree(home, ignore_errors=True)  # a fresh slot, log and lakehouse every time
    os.environ["DW_HOME"] = str(home)
    with embedded.services(env_file=None):
        os.environ["DW_REPLICATION_SOURCE_URL"] = os.environ["DW_REPLICATION_SOURCE_URL"].replace(
            f"/{embedded.REPLICATION_SOURCE_DATABASE}?", f"/{DATABASE}?"
        )
        seed()
        import dagster as dg

        from dw_platform.cli import prepare_dbt
        from dw_platform.definitions import defs

        prepare_dbt()
        definitions, instance = defs(), dg.DagsterInstance.get()
        assert definitions.resolve_job_def("replication_discover").execute_in_process(instance=instance).success
        keys = instance.get_dynamic_partitions("replication_source_app_tables")
        bulk = definitions.resolve_job_def("replication_bulk_load_source_app").execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        )
        assert bulk.success
        print(f"bulk-loaded {', '.join(keys)}; starting the Dagster daemon with the sensor on", flush=True)
        wal_start = warehouse_wal()
        daemon = start_daemon(home)
        try:
            workload = Workload(args.changes, args.rate, args.txn)
            thread = threading.Thread(target=workload.run)
            started = time.time()
            thread.start()
            thread.join()
            print(
                f"workload: {workload.done:,} changes committed in {time.time() - started:.1f}s "
                f"({workload.done / (time.time() - started):,.0f}/s)",
                flush=True,
            )
            wait_applied(workload.done, args.timeout)
            wait_runs_finished(instance, args.timeout)
        finally:
            stop(daemon)
        report(instance, workload.done)
        print(
            f"the warehouse server wrote {(warehouse_wal() - wal_start) / 2**20:,.0f} MiB of WAL meanwhile (event log, "
            "catalog, status, Dagster's event log): a slot on that server would decode all of it"
        )
    return 0


def warehouse_wal() -> int:
    from dw_platform.lib.warehouse import server_connection

    with server_connection("postgres") as conn:
        return int(conn.execute("select pg_current_wal_lsn() - '0/0'").fetchone()[0])


def connect(database: str = DATABASE):
    """The source as its owner (the workload plays the application; the pipeline's role only reads)."""
    from dw_platform.devenv import embedded

    return embedded.source_admin_connection(database)


def seed() -> None:
    from dw_platform.devenv import embedded
    from dw_platform.replication.sources import load_sources

    with connect("postgres") as conn:
        conn.execute(f'create database "{DATABASE}"')
    with connect() as conn:
        embedded.grant_replication_reads(conn, load_sources()["source_app"].publication)
        conn.execute("""
            create table accounts (id bigint primary key, owner text not null, balance numeric(14,2),
                status text, updated_at timestamptz not null, note text);
            insert into accounts select g, 'owner ' || g, g % 100000 / 100.0, 'open', now(), null
                from generate_series(1, 200000) g;
            create table entries (account_id bigint, n integer, amount numeric(12,2), booked_at timestamptz,
                memo text, primary key (account_id, n));
            insert into entries select 1 + g % 50000, g / 50000, g % 1000 / 10.0, now(), 'seed'
                from generate_series(1, 100000) g;
        """)
        conn.execute("vacuum analyze accounts")
        conn.execute("vacuum analyze entries")


class Workload:
    """Commits `total` changes in transactions of `txn` at about `rate` changes/s."""

    def __init__(self, total: int, rate: int, txn: int):
        self.total, self.rate, self.txn = total, rate, txn
        self.done = 0
        self.rng = random.Random(5)
        self.accounts = list(range(1, 200_001))
        self.next_account = 200_001
        self.entries = {(1 + g % 50000, g // 50000) for g in range(1, 100_001)}
        self.entry_list = list(self.entries)
        self.next_n = 10

    def run(self) -> None:
        with connect() as conn:
            start = time.monotonic()
            while self.done < self.total:
                size = min(self.txn, self.total - self.done)
                with conn.transaction():
                    self.done += self.transaction(conn, size)
                ahead = self.done / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)

    def transaction(self, conn, size: int) -> int:
        inserts, updates = int(size * 0.40), int(size * 0.45)
        deletes = size - inserts - updates
        changed = 0
        new_accounts = list(range(self.next_account, self.next_account + inserts * 6 // 10))
        self.next_account += len(new_accounts)
        changed += conn.execute(
            "insert into accounts select id, 'new ' || id, 0, 'new', now(), 'inserted' from unnest(%s::bigint[]) id",
            (new_accounts,),
        ).rowcount
        self.accounts += new_accounts
        new_entries = [(self.rng.choice(self.accounts), self.next_n + i) for i in range(inserts - len(new_accounts))]
        self.next_n += len(new_entries)
        changed += conn.execute(
            "insert into entries select a, n, 1.5, now(), 'inserted' from unnest(%s::bigint[], %s::int[]) as t(a, n)",
            ([a for a, _ in new_entries], [n for _, n in new_entries]),
        ).rowcount
        self.entry_list += new_entries
        touched = list({self.rng.choice(self.accounts) for _ in range(updates * 6 // 10)})
        changed += conn.execute(
            "update accounts set balance = balance + 1, status = 'active', updated_at = now() where id = any(%s)",
            (touched,),
        ).rowcount
        entry_updates = list({self.rng.choice(self.entry_list) for _ in range(updates - len(touched))})
        changed += conn.execute(
            "update entries set amount = amount + 1 where (account_id, n) in "
            "(select * from unnest(%s::bigint[], %s::int[]))",
            ([a for a, _ in entry_updates], [n for _, n in entry_updates]),
        ).rowcount
        gone = [self.accounts.pop(self.rng.randrange(len(self.accounts))) for _ in range(deletes // 2)]
        changed += conn.execute("delete from accounts where id = any(%s)", (gone,)).rowcount
        gone_entries = [
            self.entry_list.pop(self.rng.randrange(len(self.entry_list))) for _ in range(deletes - len(gone))
        ]
        changed += conn.execute(
            "delete from entries where (account_id, n) in (select * from unnest(%s::bigint[], %s::int[]))",
            ([a for a, _ in gone_entries], [n for _, n in gone_entries]),
        ).rowcount
        return changed


def start_daemon(home) -> subprocess.Popen:
    from dw_platform.devenv import embedded

    workspace = str(embedded.PROJECT_ROOT / "workspace.yaml")
    bin_dir = os.path.dirname(sys.executable)
    log = open(home / "daemon.log", "ab")
    daemon = subprocess.Popen(
        [os.path.join(bin_dir, "dagster-daemon"), "run", "-w", workspace],
        cwd=os.environ["DAGSTER_HOME"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    subprocess.run(
        [os.path.join(bin_dir, "dagster"), "sensor", "start", JOB, "-w", workspace],
        cwd=os.environ["DAGSTER_HOME"],
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return daemon


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def applied_everything() -> tuple[int, int]:
    """(events logged, events applied) over both tables."""
    from dw_platform.lib.lakehouse import lakehouse_from_env
    from dw_platform.replication.apply import consumer_offsets
    from dw_platform.replication.status import ReplicationMeta

    lakehouse = lakehouse_from_env()
    with lakehouse.connect() as conn:
        if not conn.execute("select to_regclass('bronze.cdc_topics') is not null").fetchone()[0]:
            return 0, 0
        logged = conn.execute("select coalesce(sum(next_offset), 0) from bronze.cdc_topics").fetchone()[0]
        applied = sum(o + 1 for o in consumer_offsets(ReplicationMeta(lakehouse, "source_app"), conn).values())
    return int(logged), applied


def wait_applied(changes: int, timeout: int) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        logged, applied = applied_everything()
        print(f"  logged {logged:,}, applied {applied:,} of {changes:,}", flush=True)
        if applied >= changes:
            return
        time.sleep(5)
    raise SystemExit("timed out waiting for the changes to be applied (see .dw/bench-replication-cdc/daemon.log)")


def wait_runs_finished(instance, timeout: int) -> None:
    """The last run still runs its checks after applying: let it finish (its time counts)."""
    import dagster as dg

    from dw_platform.defs.replication.sensors import IN_PROGRESS

    deadline = time.time() + timeout
    while instance.get_runs(dg.RunsFilter(job_name=JOB, statuses=IN_PROGRESS), limit=1) and time.time() < deadline:
        time.sleep(2)


def report(instance, changes: int) -> None:
    import dagster as dg

    from dw_platform.lib.lakehouse import lakehouse_from_env
    from dw_platform.replication.sources import load_sources
    from dw_platform.replication.status import ReplicationMeta
    from dw_platform.replication.validate import compare_table

    lakehouse = lakehouse_from_env()
    runs = [r for r in instance.get_run_records(dg.RunsFilter(job_name=JOB)) if r.end_time]
    wall = sum(r.end_time - r.start_time for r in runs)
    applied = [m for m in materializations(instance, ["bronze", "lakehouse", "source_app"]) if "events_applied" in m]
    apply_seconds = sum(m["duration_s"].value for m in applied)
    captures = materializations(instance, ["bronze", "cdc_events", "source_app"])
    lags = visibility_lags(lakehouse)
    print()
    print(f"{changes:,} changes, {len(runs)} CDC run(s) launched by the sensor, {len(applied)} applied micro-batches")
    capture_s = sum(c["capture_s"].value for c in captures)
    print(
        f"captured: {changes / capture_s:,.0f} changes/s ({capture_s:.1f}s); applied: {changes / apply_seconds:,.0f} "
        f"changes/s ({apply_seconds:.1f}s); both: {changes / (capture_s + apply_seconds):,.0f} changes/s"
    )
    print(f"CDC runs' wall time {wall:.1f}s (process start, waiting for changes while the workload ran, checks)")
    lags.sort()
    print(
        f"end-to-end lag (source commit -> visible in Iceberg) over {len(lags):,} changes: "
        f"p50 {statistics.median(lags):.1f}s, p95 {lags[int(len(lags) * 0.95)]:.1f}s, max {lags[-1]:.1f}s"
    )
    source = load_sources()["source_app"]
    for key, status in sorted(ReplicationMeta(lakehouse, "source_app").statuses().items()):
        c = compare_table(source, lakehouse, key, status)
        print(
            f"  {key}: {c['rows_source']:,} rows, lakehouse {c['rows_lakehouse']:,}, "
            f"{'equal (content hash)' if c['match'] else 'DIFFERENT'}"
        )


def materializations(instance, key: list[str]) -> list[dict]:
    """The metadata of every materialization of `key` (paged: the instance returns 10,000 at most)."""
    import dagster as dg

    out, cursor = [], None
    while True:
        page = instance.fetch_materializations(dg.AssetKey(key), limit=10_000, cursor=cursor)
        out += [r.asset_materialization.metadata for r in page.records]
        if not page.has_more:
            return out
        cursor = page.cursor


def visibility_lags(lakehouse) -> list[float]:
    """Per change: when the Iceberg snapshot holding it was written minus when it committed."""
    import bisect

    from dw_platform.replication.iceberg import summary_value
    from dw_platform.replication.status import ReplicationMeta

    lags = []
    statuses = ReplicationMeta(lakehouse, "source_app").statuses()
    with lakehouse.connect() as conn:
        for key, status in statuses.items():
            table = lakehouse.catalog().load_table(status["iceberg_table"])
            points = sorted(
                (int(summary_value(s, "dw.applied-offset")), s.timestamp_ms)
                for s in table.snapshots()
                if summary_value(s, "dw.operation") == "cdc_apply"
            )
            offsets = [p[0] for p in points]
            rows = conn.execute(
                """select "offset", (event->'source'->>'ts_ms')::bigint from bronze.cdc_events
                                   where topic = %s""",
                (f"source_app.{key}",),
            ).fetchall()
            for offset, commit_ms in rows:
                at = bisect.bisect_left(offsets, offset)
                if at < len(points):
                    lags.append((points[at][1] - commit_ms) / 1000)
    return lags


if __name__ == "__main__":
    sys.exit(main())
