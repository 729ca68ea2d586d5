"""A day's cost as history grows, and the history itself loaded in one backfill run.

    .venv/bin/python -m benchmarks.bench_history [--years 5] [--days 30] [--per-day 10000] [--repeat 3]

Runs on its own embedded PostgreSQL under `.dw/bench-history` (never on servers from the
environment or `.env`). Two CRM sources are generated in SQL with generate_series (not timed):
`--per-day` customers last modified on each day of the last `--days` days, and of the last
`--years` years (5 years x 10,000 a day: 18.26 million rows), one source row per customer as a CRM
holds them. Each gets its own warehouse, filled by the `customer_daily` job over the whole history as
ONE run (a single-run backfill: bronze, silver, gold and every check; timed: rows/s, peak RSS).
Then `--repeat` times, on both warehouses alike: `--per-day` customers already in the history
change on the next day in the source, and that day's `customer_daily` run is timed (bronze, dbt,
checks: the whole job, in a fresh process). The day on the long history should cost at most
1.2x the day on the short one; the backfill should reach 50,000 source rows/s end to end.

Each run is a worker process of its own (its peak RSS is its own: benchmarks/workers.py).
A warehouse whose bronze already holds its whole history is kept for the next invocation
(`--rebuild` starts over): the days changed by earlier invocations are then already in it, and
new days follow them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date, timedelta

from benchmarks.workers import emit, peak_rss_mib, run_worker

DAY_GOAL = 1.2  # the long history's day may cost at most this multiple of the short one's
BACKFILL_GOAL = 50_000  # source rows/s of the one-run backfill, bronze to gold with checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--years", type=float, default=5, help="the long history, in years (default 5)")
    parser.add_argument("--days", type=int, default=30, help="the short history, in days (default 30)")
    parser.add_argument("--per-day", type=int, default=10_000, help="customers changed a day (default 10,000)")
    parser.add_argument("--repeat", type=int, default=3, help="days run on each history; the median counts")
    parser.add_argument("--rebuild", action="store_true", help="drop the warehouses and backfill them again")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one job, print its result
    parser.add_argument("--range", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(date.fromisoformat(args.range[0]), date.fromisoformat(args.range[1]))

    from dw_platform.devenv import embedded

    for key in [k for k in os.environ if k.startswith(("DW_", "DAGSTER_PG_URL", "DAGSTER_HOME"))]:
        del os.environ[key]
    os.environ["DW_HOME"] = str(embedded.PROJECT_ROOT / ".dw" / "bench-history")
    with embedded.services(env_file=None):
        from dw_platform.cli import prepare_dbt

        prepare_dbt()
        # The history ends 12 days ago: the days run after it must be partitions already (past days).
        end = date.today() - timedelta(days=12)
        histories = {
            "short": (args.days, f"{args.days} days"),
            "long": (round(args.years * 365.25), f"{args.years:g} years"),
        }
        backfills, days = {}, {}
        for name, (span, label) in histories.items():
            source, warehouse = f"history_{name}_source", f"history_{name}_warehouse"
            first, last = end - timedelta(days=span), end - timedelta(days=1)
            rows = seed_source(source, first, span, args.per_day)
            env = {
                # The customer partitions start with the long history: its first day is the history load.
                "DW_CUSTOMER_START_DATE": (end - timedelta(days=histories["long"][0])).isoformat(),
                "DW_PG_DATABASE": warehouse,
                "DW_CUSTOMER_ODBC": embedded.odbc_connection_string(
                    os.environ["DW_PG_HOST"],
                    int(os.environ["DW_PG_PORT"]),
                    source,
                    os.environ["DW_PG_USER"],
                    os.environ["DW_PG_PASSWORD"],
                ),
            }
            if args.rebuild or bronze_rows(warehouse) < rows:
                create_database(warehouse, fresh=True)
                print(f"{label}: backfilling {first} .. {last} ({rows:,} source rows) in one run ...", flush=True)
                backfills[name] = run_worker(
                    "benchmarks.bench_history", "job", "--range", first.isoformat(), last.isoformat(), env=env
                )
                backfills[name]["source_rows"] = rows
                print(f"  {describe(backfills[name])}", flush=True)
            days[name] = []
            for _ in range(args.repeat):
                day = change_next_day(source, args.per_day)
                result = run_worker(
                    "benchmarks.bench_history", "job", "--range", day.isoformat(), day.isoformat(), env=env
                )
                print(f"{label}: day {day}: {describe(result)}", flush=True)
                days[name].append(result)
        report(histories, backfills, days, args.per_day)
    return 0


def describe(result: dict) -> str:
    steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in result["steps"].items())
    return f"{result['seconds']:.1f}s ({steps}), peak RSS {result['peak_rss_mib']:.0f} MiB"


# ---------------------------------------------------------------- the sources and warehouses


def admin(dbname: str):
    from dw_platform.devenv.embedded import admin_connection

    return admin_connection(dbname)


def create_database(name: str, fresh: bool = False) -> None:
    from dw_platform.devenv.embedded import PIPELINE_ROLE

    with admin("postgres") as conn:
        if fresh:
            conn.execute(f'drop database if exists "{name}" with (force)')
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}" owner {PIPELINE_ROLE}')


def bronze_rows(warehouse: str) -> int:
    create_database(warehouse)
    with admin(warehouse) as conn:
        if not conn.execute("select to_regclass('bronze.customer_profile_raw')").fetchone()[0]:
            return 0
        # The planner's estimate would do for "is it there", but a kept warehouse must be whole.
        return conn.execute("select count(*) from bronze.customer_profile_raw").fetchone()[0]


# One row per customer as the CRM holds it, `per_day` of them last modified on each day, spread
# over the day; dirty like the sample CRM (mixed case, aliases, unformatted phones, blanks).
SEED_SQL = """
insert into dbo.customer_profile
select
    i,
    (array['anna', ' Ben', 'CHLOE', 'david ', 'Emma', 'felix'])[1 + i %% 6],
    (array['Schmidt', 'miller', 'DUBOIS', 'Rossi ', 'garcia'])[1 + i %% 5],
    case when i %% 97 = 0 then 'not-an-email' else 'c' || i || '@Example.com' end,
    case i %% 3 when 0 then '(555) ' || lpad((i %% 10000000)::text, 7, '0')
               when 1 then '+49 30 ' || lpad((i %% 10000000)::text, 7, '0') else 'n/a' end,
    (array['usa', 'Germany', 'uk', 'fr', 'Atlantis'])[1 + i %% 5],
    (array['austin', 'Berlin ', 'LONDON', 'paris'])[1 + i %% 4],
    date '1940-01-01' + (i %% 22000),
    (array['Retail', 'small business', 'ENTERPRISE', null])[1 + i %% 4],
    (array['bronze', 'Silver', 'GOLD', 'platinum', null])[1 + i %% 5],
    i %% 5 < 3,
    %(first)s::timestamp - interval '400 days' + (i %% 300) * interval '1 day',
    %(first)s::timestamp + (i - 1) * (interval '1 day' / %(per_day)s)
from generate_series(1, %(rows)s) as i
"""


def seed_source(db: str, first: date, days: int, per_day: int) -> int:
    """The source's history (kept when already there): `per_day` customers modified on each day
    from `first`; returns its row count."""
    from dw_platform.devenv.embedded import create_source_database
    from dw_platform.samples import customer

    rows = days * per_day
    create_source_database(db)  # the pipeline role reads it, as it reads the CRM
    with admin(db) as conn:
        conn.execute(customer.DDL)
        held = conn.execute("select count(*), min(last_modified_ts)::date from dbo.customer_profile").fetchone()
        if held != (rows, first) and not (held[0] >= rows and held[1] == first):
            print(f"seeding {db} with {rows:,} customers ({per_day:,} a day from {first}) ...", flush=True)
            started = time.monotonic()
            conn.execute("truncate dbo.customer_profile")
            conn.execute(SEED_SQL, {"first": first, "per_day": per_day, "rows": rows})
            conn.execute("vacuum analyze dbo.customer_profile")
            print(f"  seeded in {time.monotonic() - started:.0f}s", flush=True)
    return rows


def change_next_day(db: str, per_day: int) -> date:
    """`per_day` customers of the history change on the day after the source's last one (their
    email and tier), spread over that day; returns the day."""
    with admin(db) as conn:
        last, customers = conn.execute(
            "select max(last_modified_ts)::date, count(*) from dbo.customer_profile"
        ).fetchone()
        day = last + timedelta(days=1)
        conn.execute(
            """
            update dbo.customer_profile as c
            set email = 'changed' || c.customer_id || '@example.com',
                loyalty_tier = 'platinum',
                last_modified_ts = %(day)s::timestamp + picked.n * (interval '1 day' / %(per_day)s)
            from (
                select customer_id, row_number() over () - 1 as n
                from (select distinct (random() * (%(customers)s - 1))::int + 1 as customer_id
                      from generate_series(1, %(per_day)s * 2)) as ids
                limit %(per_day)s
            ) as picked
            where c.customer_id = picked.customer_id
            """,
            {"day": day, "per_day": per_day, "customers": customers},
        )
    return day


# ---------------------------------------------------------------- the worker: one job run


def worker(first: date, last: date) -> int:
    """`customer_daily` for first..last as one run (bronze, silver, gold, checks); prints seconds,
    source rows, the time each step took and this process's peak RSS."""
    import dagster as dg

    from dw_platform.definitions import defs
    from dw_platform.lib.dbt import prepare_manifest

    # A deployment's dbt parses once for its warehouse; the two warehouses here differ in
    # DW_PG_DATABASE, which dbt's partial parse checks, so a day's run would re-parse the whole
    # project (3-7 s, either history). Parse beforehand, untimed, as a deployment has.
    prepare_manifest()
    job = defs().resolve_job_def("customer_daily")
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    started = time.monotonic()
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    seconds = time.monotonic() - started
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        print("\n".join(str(f) for f in failures)[-4000:], file=sys.stderr)
        return 1
    steps = {"bronze": 0.0, "bronze checks": 0.0, "dbt (silver, gold, tests)": 0.0}
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS":
            key = event.step_key
            step = (
                "dbt (silver, gold, tests)"
                if key.startswith("dbt")
                else "bronze checks"
                if "customer_profile_raw_" in key
                else "bronze"
            )
            steps[step] += event.event_specific_data.duration_ms / 1000
    rows = sum(
        m.metadata["rows_read"].value
        for e in result.get_asset_materialization_events()
        for m in [e.event_specific_data.materialization]
        if m.asset_key == dg.AssetKey(["bronze", "customer_profile_raw"]) and "rows_read" in m.metadata
    )
    emit({"seconds": seconds, "rows": rows, "steps": steps, "peak_rss_mib": peak_rss_mib()})
    return 0


# ---------------------------------------------------------------- the report


def report(histories: dict, backfills: dict, days: dict, per_day: int) -> None:
    print()
    print(f"One day's customer_daily run ({per_day:,} changed customers; bronze, silver, gold, checks),")
    print("the median of the days run, on each history:")
    print(f"{'history':<12} {'day (s)':>8}  steps (median s)")
    medians = {}
    for name, (_, label) in histories.items():
        runs = days[name]
        medians[name] = statistics.median(r["seconds"] for r in runs)
        steps = {step: statistics.median(r["steps"].get(step, 0) for r in runs) for step in runs[0]["steps"]}
        print(f"{label:<12} {medians[name]:>8.1f}  " + ", ".join(f"{s} {v:.1f}" for s, v in steps.items()))
    ratio = medians["long"] / medians["short"]
    verdict = "REACHES" if ratio <= DAY_GOAL else "DOES NOT reach"
    print(f"long / short: {ratio:.2f}x; {verdict} the goal of <= {DAY_GOAL}x")
    for name, backfill in backfills.items():
        rate = backfill["source_rows"] / backfill["seconds"]
        print(
            f"backfill of the {histories[name][1]} ({backfill['source_rows']:,} source rows, one run): "
            f"{backfill['seconds']:.0f}s, {rate:,.0f} source rows/s, peak RSS {backfill['peak_rss_mib']:.0f} MiB"
            + (
                f"; {'REACHES' if rate >= BACKFILL_GOAL else 'DOES NOT reach'} {BACKFILL_GOAL:,} rows/s"
                if name == "long"
                else ""
            )
        )


if __name__ == "__main__":
    sys.exit(main())
