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
from datetime import datetime, timezone
from pathlib import Path

from psycopg import sql

from dw_platform.devenv import embedded
from dw_platform.devenv.console import port_taken
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
    from dw_platform.lib.drop import droppable_domains

    top = argparse.ArgumentParser(
        prog="dw",
        description=__doc__,
        epilog="Settings come from the environment or .env (see .env.example); `dw COMMAND -h` explains a command.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "demo",
        help="seed the sample sources, materialize the whole graph, print a summary",
        description="Seed every domain's sample source, run its jobs (Dagster's and dbt's detail goes to "
        "a log under .dw/logs/) and print a summary per domain. Embedded default only.",
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
    drop.add_argument("domain", choices=droppable_domains(), help="the domain whose landing zone receives the file")
    drop.add_argument("file", type=Path, help="the local file to upload")
    rotate = sub.add_parser(
        "rotate-keys",
        help="re-encrypt a domain's sensitive columns under its newest key",
        description="Re-encrypt every sensitive value under the first key of "
        "DW_SALES_FERNET_KEYS; the older keys can be removed afterwards.",
    )
    rotate.add_argument("domain", choices=["sales"], help="the domain whose sensitive columns are re-encrypted")
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
    with embedded.services() as embedded_in_use:
        if args.command == "rotate-keys":
            return rotate_keys(args.domain)
        if args.command == "sql":
            return psql(args.psql_args)
        if args.command == "drop":
            from dw_platform.lib.drop import drop

            print(f"dropped {args.file} into {drop(args.domain, args.file)}")
            return 0
        prepare_dbt()
        if args.command == "demo":
            return demo(embedded_in_use)
        return dev(args.port)


def dev(port: int) -> int:
    """`dagster dev` on 127.0.0.1:`port` with the code location; its output (and its runs') goes
    to a log file, warnings and errors to the console (dw_platform/devenv/console.py)."""
    from dw_platform.devenv import console

    log_path = embedded.state_dir() / "logs" / f"dev-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Started from DAGSTER_HOME so the instance reads that folder's dagster.yaml (a link to ours).
    # Its own process group: on Ctrl-C or SIGTERM, the webserver, daemon and code servers stop
    # together, in order, before the embedded services do. At info the daemon logs two lines per
    # sensor tick (every 30 s) even when there is nothing to do: warnings and errors only.
    dagster_dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(embedded.PROJECT_ROOT / "workspace.yaml"),
            "-h",
            HOST,
            "-p",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=os.environ["DAGSTER_HOME"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    with open(log_path, "ab") as log:
        output = console.start_splitting(dagster_dev.stdout, log, sys.stderr)
        try:
            deadline = time.monotonic() + UI_START_TIMEOUT_S
            while not console.answers(HOST, port):
                if dagster_dev.poll() is not None:
                    output.join(timeout=5)
                    print(f"dw dev: Dagster stopped before the UI came up; its output: {log_path}", file=sys.stderr)
                    return dagster_dev.returncode or 1
                if time.monotonic() > deadline:
                    print(f"dw dev: no UI on port {port} after {UI_START_TIMEOUT_S} s; see {log_path}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            print(
                f"dw dev: Dagster UI at http://{HOST}:{port} (Ctrl-C stops). Warnings and errors show here; "
                f"everything, runs included, in {log_path} (and each run's logs in the UI).",
                file=sys.stderr,
            )
            return dagster_dev.wait()
        except (KeyboardInterrupt, SystemExit):
            print("dw dev: stopping Dagster and the embedded services ...", file=sys.stderr)
            return 0
        finally:
            embedded.stop_process(dagster_dev, grace_s=30, group=True)
            output.join(timeout=5)


def prepare_dbt() -> None:
    """Parse the dbt project when its manifest does not match the code (the definitions read it)."""
    from dw_platform.lib.dbt import prepare_manifest

    prepare_manifest()


def demo(embedded_in_use: bool) -> int:
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
    status = run_all(defs(), dg.DagsterInstance.get(), log_path)
    _print_tables()
    print(f"full log (Dagster and dbt output): {log_path}")
    print(
        "next: `make dev` opens the Dagster UI at http://127.0.0.1:3000 (runs, checks, backfills); "
        "`.venv/bin/dw sql` opens psql on the warehouse."
    )
    return status


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
    from dw_platform.defs.sales.rotation import rotate_keys as rotate
    from dw_platform.lib.crypto import Cipher

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
