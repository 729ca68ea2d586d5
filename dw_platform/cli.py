"""`dw`: run the platform. Without connection settings it starts the embedded default first."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

from psycopg import sql

from dw_platform import domains
from dw_platform.devenv import embedded, supervisor
from dw_platform.devenv.console import port_taken
from dw_platform.devenv.workers import QUEUES
from dw_platform.lib.warehouse import server_connection

HOST = "127.0.0.1"  # the UI listens on this machine only
UI_START_TIMEOUT_S = 300


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sql"] and argv[1:2] not in (["-h"], ["--help"]):
        args = argparse.Namespace(command="sql", psql_args=argv[1:])  # psql's own options, untouched
    else:
        args = parser().parse_args(argv)
    # A plain SIGTERM would skip cleanup: make it unwind like Ctrl-C, so servers and children stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return run(args)
    except KeyboardInterrupt:  # Ctrl-C: the services have stopped on the way out; no traceback
        print("dw: interrupted", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="dw",
        description=__doc__,
        epilog="Settings come from the environment or .env (see .env.example); `dw COMMAND -h` explains a command.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="seed the sample sources, materialize the whole graph, print a summary",
        description="Seed every domain's sample source, run its jobs (Dagster's and dbt's detail goes to "
        "a log under .dw/logs/) and print a summary per domain. Embedded default only.",
    )
    demo.add_argument(
        "domains",
        nargs="*",
        metavar="DOMAIN",
        help=f"only these domains, in this order (default: all of {', '.join(domains.DOMAINS)})",
    )
    dev = sub.add_parser(
        "dev",
        help="start the Dagster UI and daemon on the same services",
        description="The Dagster webserver, daemon (schedules, sensors, automation) and code server, "
        "on the embedded services or the configured servers. The console shows warnings and errors; "
        "everything Dagster and its runs print goes to .dw/logs/dev-<time>.log. Ctrl-C stops everything.",
    )
    dev.add_argument(
        "--port",
        type=int,
        default=3000,
        help="port of the UI on 127.0.0.1 (default: %(default)s; `make dev PORT=3001`); dw dev stops at once if it is taken",
    )
    workers = sub.add_parser(
        "workers",
        help="start N Celery workers for the runs' steps (DW_EXECUTOR=celery)",
        description="N Celery workers, one step at a time each, for runs started with DW_EXECUTOR=celery "
        "(set it in .env for `dw dev` too). A worker that dies is started again; Ctrl-C stops them.",
    )
    workers.add_argument("count", type=int, nargs="?", default=2, help="how many workers (default: %(default)s)")
    workers.add_argument(
        "--queues",
        default=",".join(QUEUES),
        help="comma-separated queues to take steps from (default: %(default)s); e.g. `--queues replication` "
        "for workers of the replication domain's own",
    )
    sql = sub.add_parser(
        "sql",
        help="open psql on the warehouse (starting the embedded services if needed)",
        description="psql connected to the warehouse as the pipeline role. Arguments after `sql` go "
        "to psql, e.g. `dw sql -c 'select count(*) from gold.dim_customer_profile'`.",
    )
    sql.add_argument(
        "psql_args",
        nargs=argparse.REMAINDER,
        metavar="PSQL_ARGS",
        help="passed on to psql (e.g. -c 'select 1', -f file.sql)",
    )
    drop = sub.add_parser(
        "drop",
        help="put a local file into a domain's landing zone",
        description="Upload FILE where the domain's sensor or job looks for it (the sales sensor "
        "picks it up on its next tick once switched on).",
    )
    drop.add_argument(
        "domain",
        choices=[d.name for d in domains.REGISTRY if d.landing_zone],
        help="the domain whose landing zone receives the file",
    )
    drop.add_argument("file", type=Path, help="the local file to upload")
    backfill = sub.add_parser(
        "backfill",
        help="build a domain's days FROM..TO (bronze, silver, gold, checks) as one run",
        description="Run the domain's daily job (<domain>_daily) for every day from FROM to TO, both included, as "
        "ONE run on the Dagster instance (a single-run backfill, as the UI's Backfill button with a range launches "
        "it): one bronze load of the range, one dbt build of its window. The run shows in the UI with its logs; "
        "progress is printed here too. Exits 1 when the run fails.",
    )
    backfill.add_argument("domain", help="a domain with a daily job: customer, video")
    backfill.add_argument("--from", dest="first", type=_day, required=True, help="first day (YYYY-MM-DD)")
    backfill.add_argument("--to", dest="last", type=_day, required=True, help="last day, included (YYYY-MM-DD)")
    rotate = sub.add_parser(
        "rotate-keys",
        help="re-encrypt a domain's sensitive columns under its newest key",
        description="Re-encrypt every sensitive value under the first key of "
        "DW_SALES_FERNET_KEYS; the older keys can be removed afterwards.",
    )
    rotate.add_argument("domain", choices=["sales"], help="the domain whose sensitive columns are re-encrypted")
    new = sub.add_parser(
        "new-domain",
        help="add a domain from the template (docs/adding-a-domain.md)",
        description="Copy templates/domain/ into a new domain: its Dagster definitions, sample data and demo "
        "step, dbt sources, silver and gold models and a singular test; register it in dw_platform/domains.py "
        "and add its settings to .env.example. Prints the files it wrote.",
    )
    new.add_argument("name", help="the domain's name: a lower-case word (letters and digits, 3-30)")
    new.add_argument("--owner", required=True, help="the owning team (team:<name>) or an email address")
    return top


def run(args: argparse.Namespace) -> int:
    if args.command == "dev" and port_taken(HOST, args.port):  # before anything starts
        print(
            f"dw dev: port {args.port} on {HOST} is already in use (another `make dev`, or another program), "
            f"so the Dagster UI cannot start there. Stop what holds it, or choose another port: "
            f"make dev PORT={args.port + 1} (or dw dev --port {args.port + 1}).",
            file=sys.stderr,
        )
        return 2
    if args.command == "new-domain":
        return new_domain(args.name, args.owner)
    if args.command == "demo" and (unknown := [d for d in args.domains if d not in domains.DOMAINS]):
        print(f"dw demo: unknown domain(s) {', '.join(unknown)}; known: {', '.join(domains.DOMAINS)}", file=sys.stderr)
        return 2
    if args.command == "backfill" and args.domain not in domains.DOMAINS:
        print(f"dw backfill: unknown domain {args.domain}; known: {', '.join(domains.DOMAINS)}", file=sys.stderr)
        return 2
    # `dw drop`, `dw backfill` and `dw demo DOMAIN...` start only the servers their domains need.
    single = args.command in ("drop", "backfill")
    chosen = (args.domain,) if single else tuple(getattr(args, "domains", None) or domains.DOMAINS)
    with embedded.services(needs=domains.services_needed(chosen)) as embedded_in_use:
        if args.command == "rotate-keys":
            return rotate_keys(args.domain)
        if args.command == "sql":
            return psql(args.psql_args)
        if args.command == "drop":
            if not args.file.is_file():
                print(f"dw drop: {args.file} is not a file", file=sys.stderr)
                return 2
            print(f"dropped {args.file} into {domains.get(args.domain).drop(args.file)}")
            return 0
        prepare_dbt()
        if args.command == "backfill":
            return backfill(args.domain, args.first, args.last)
        if args.command == "demo":
            return demo(embedded_in_use, chosen)
        if args.command == "workers":
            return workers(args.count, tuple(q.strip() for q in args.queues.split(",") if q.strip()))
        return dev(args.port, embedded_in_use)


def dev(port: int, embedded_postgres: bool) -> int:
    """The webserver, daemon and code server, kept running by a supervisor (devenv/supervisor.py),
    on 127.0.0.1:`port`. Everything they and their runs print goes to a log file; warnings,
    errors and the supervisor's own lines to the console (devenv/console.py)."""
    from dw_platform.devenv import console

    log_path = embedded.state_dir() / "logs" / f"dev-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    with open(log_path, "ab") as log, open(read_end, "rb") as reader:
        output = console.start_splitting(reader, log, sys.stderr)
        try:
            with (
                open(write_end, "w", buffering=1) as writer,
                supervisor.dagster_dev(port, embedded_postgres=embedded_postgres, output=writer) as stack,
            ):
                try:
                    deadline = time.monotonic() + UI_START_TIMEOUT_S
                    while not console.answers(HOST, port):
                        if stack.dagster_dev.poll() is not None:
                            print(
                                f"dw dev: Dagster stopped before the UI came up; its output: {log_path}",
                                file=sys.stderr,
                            )
                            return stack.dagster_dev.returncode or 1
                        if time.monotonic() > deadline:
                            print(
                                f"dw dev: no UI on port {port} after {UI_START_TIMEOUT_S} s; see {log_path}",
                                file=sys.stderr,
                            )
                            return 1
                        time.sleep(0.5)
                    print(
                        f"dw dev: Dagster UI at http://{HOST}:{port} (Ctrl-C stops). Warnings and errors show here; "
                        f"everything, runs included, in {log_path} (and each run's logs in the UI).",
                        file=sys.stderr,
                    )
                    return stack.wait()
                except (KeyboardInterrupt, SystemExit):
                    print("dw dev: stopping Dagster and the embedded services ...", file=sys.stderr)
                    return 0
        finally:
            output.join(timeout=5)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {value!r}") from None


def daily_job(name: str):
    """The job `name` of the code location, for Dagster to rebuild in the run's process."""
    from dw_platform.definitions import defs

    return defs().resolve_job_def(name)


def backfill(domain: str, first: date, last: date) -> int:
    """The domain's daily job over first..last as one run (Dagster's range tags: the same run the
    UI launches for a backfill of assets with a single-run backfill policy)."""
    import dagster as dg

    job_name = f"{domain}_daily"
    try:
        job = daily_job(job_name)
    except dg.DagsterInvariantViolationError:
        print(f"dw backfill: the {domain!r} domain has no daily job ({job_name})", file=sys.stderr)
        return 2
    keys = job.partitions_def.get_partition_keys()
    missing = [day.isoformat() for day in (first, last) if day.isoformat() not in keys]
    if first > last or missing:
        print(
            f"dw backfill: {job_name} has daily partitions from {keys[0]} to {keys[-1]}; "
            f"{first}..{last} is not a range of them",
            file=sys.stderr,
        )
        return 2
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
        "dw/launched_by": "dw backfill",
    }
    print(f"dw backfill: {job_name} for {first}..{last} ({(last - first).days + 1} days) as one run", file=sys.stderr)
    with dg.DagsterInstance.get() as instance:
        recon = dg.build_reconstructable_job("dw_platform.cli", "daily_job", reconstructable_args=(job_name,))
        with dg.execute_job(recon, instance=instance, tags=tags, raise_on_error=False) as result:
            print(f"dw backfill: run {result.run_id} {'succeeded' if result.success else 'FAILED'}", file=sys.stderr)
            return 0 if result.success else 1


def workers(count: int, queues: tuple[str, ...]) -> int:
    from dw_platform.devenv.workers import run_workers
    from dw_platform.lib.executor import executor_name

    if executor_name() != "celery":
        print(
            "dw workers: steps run in process (DW_EXECUTOR is not celery): set DW_EXECUTOR=celery in .env",
            file=sys.stderr,
        )
        return 2
    return run_workers(count, queues)


def prepare_dbt() -> None:
    """Parse the dbt project when its manifest does not match the code (the definitions read it)."""
    from dw_platform.lib.dbt import prepare_manifest

    prepare_manifest()


def demo(embedded_in_use: bool, names: tuple[str, ...]) -> int:
    import dagster as dg

    from dw_platform.definitions import defs
    from dw_platform.devenv.demo import run_all

    if not embedded_in_use:
        print(
            "dw demo writes sample source data, so it runs only on the embedded default; "
            "unset DW_PG_HOST (and remove it from .env) to use it.",
            file=sys.stderr,
        )
        return 2
    log_path = embedded.state_dir() / "logs" / f"demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.log"
    status = run_all(defs(), dg.DagsterInstance.get(), log_path, names)
    _print_tables()
    print(f"full log (Dagster and dbt output): {log_path}")
    print(
        "next: `make dev` opens the Dagster UI at http://127.0.0.1:3000 (runs, checks, backfills); "
        "`.venv/bin/dw sql` opens psql on the warehouse."
    )
    return status


def new_domain(name: str, owner: str) -> int:
    from dw_platform.devenv.new_domain import create

    try:
        written = create(name, owner)
    except ValueError as exc:
        print(f"dw new-domain: {exc}", file=sys.stderr)
        return 2
    print(f"domain {name} created from templates/domain/ ({len(written)} files):")
    for path in written:
        print(f"  {path.relative_to(embedded.PROJECT_ROOT)}")
    print("next: docs/adding-a-domain.md (try it: `dw demo " + name + "`)")
    return 0


def psql(arguments: list[str]) -> int:
    """psql on the warehouse as the pipeline role; the password goes through the environment."""
    bundled = (
        Path(importlib.util.find_spec("pgserver").origin).parent / "pginstall" / "bin" / "psql"
        if importlib.util.find_spec("pgserver")
        else None
    )
    command = str(bundled) if bundled and bundled.exists() else shutil.which("psql")
    if command is None:
        print("psql not found: install PostgreSQL's client (apt-get install postgresql-client)", file=sys.stderr)
        return 2
    env = {
        **os.environ,
        "PGHOST": os.environ["DW_PG_HOST"],
        "PGPORT": os.environ.get("DW_PG_PORT", "5432"),
        "PGUSER": os.environ["DW_PG_USER"],
        "PGPASSWORD": os.environ.get("DW_PG_PASSWORD", ""),
        "PGDATABASE": os.environ["DW_PG_DATABASE"],
        "PGSSLMODE": os.environ.get("DW_PG_SSLMODE", "prefer"),
    }
    child = subprocess.Popen([command, *arguments], env=env)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to psql (cancels a query)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def rotate_keys(domain: str) -> int:
    """Re-encrypt every sensitive value under the first key of DW_SALES_FERNET_KEYS."""
    from dw_platform.lib.crypto import Cipher
    from dw_platform.sales.rotation import rotate_keys as rotate

    keys = os.environ.get("DW_SALES_FERNET_KEYS")
    if not keys:
        print("DW_SALES_FERNET_KEYS is not set: put the new key first, the old keys after it.", file=sys.stderr)
        return 2
    cipher = Cipher(keys)
    with server_connection(os.environ["DW_PG_DATABASE"]) as conn:
        counts = rotate(conn, cipher)
    print(
        f"{domain}: re-encrypted {counts['rows_rotated']:,} rows and {counts['quarantine_rows_rotated']:,} "
        f"quarantined lines of {counts['blobs']:,} blobs under the newest key; the old keys can now be removed."
    )
    return 0


def _print_tables() -> None:
    with server_connection(os.environ["DW_PG_DATABASE"]) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('bronze', 'silver', 'gold') and table_type = 'BASE TABLE' "
            "order by array_position(array['bronze', 'silver', 'gold'], table_schema::text), table_name"
        ).fetchall()
        print("rows per table:")
        for schema, name in tables:
            count = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, name))).fetchone()[0]
            print(f"  {schema}.{name:<40} {count:>10,}")
    print()


if __name__ == "__main__":
    sys.exit(main())
