"""Throughput and memory of the sales bronze load (one large blob), next to a pandas baseline.

    .venv/bin/python -m benchmarks.bench_sales [--mb 200 | --gb 1] [--skip-baseline] [--breakdown]

Runs on its own embedded PostgreSQL and Azurite under `.dw/bench-sales` (never on servers from
the environment or `.env`). A sample sales CSV of the requested size is generated once (kept
while its size matches) and uploaded to `incoming/` in the container `bench`; neither is timed.

Each method runs in a fresh subprocess, so its peak RSS is its own (VmHWM from /proc/self/status,
as benchmarks/bench_customer.py reads it), and reads the same blob from Azurite:

  blob_download        the blob's chunks, discarded. The CEILING of any loader reading it.
  dw_platform_asset    the real asset `bronze/sales` materialized with `dg.materialize` for the
                       blob's partition: framing, parsing, every validation, the declared
                       rules, Fernet encryption of two columns (process pool), the
                       quarantine, binary COPY, ledger.
                       Seconds = the loader's own timing; the Dagster run's wall time beside it.
  stage_*              with --breakdown: the asset's own pipeline cut after each stage, outside
                       Dagster (parse/validate; + encryption; + COPY), so each stage's cost is
                       the difference to the one before.
  pandas_to_sql_multi  BASELINE: `pandas.read_csv(chunksize=100_000)` over the same blob stream +
                       `to_sql(method="multi", chunksize=1000)` through SQLAlchemy; no
                       validation, no encryption, no lineage (it does less work).

CPU s is the method's own process (all its threads), pool CPU s its worker processes (the
encryption pool), PG CPU s and Azurite CPU s what the benchmark's PostgreSQL (every process of
it) and Azurite used meanwhile. The last lines give the asset's rows/s over the whole Dagster run,
its ratio to the download ceiling of the same run, and its CPU seconds in all and per million rows.
The streaming claim is the peak RSS column: it must not grow with the file size (compare
`--mb 100` with `--gb 1`). No assertions: the exit code is 0 whenever every method ran.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.workers import emit, peak_rss_mib, postgres_cpu, process_tree_cpu, run_worker

CONTAINER = "bench"
BLOB_KEY = "bench/sales_large.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--mb", type=int, default=200, help="file size in MiB (default 200)")
    size.add_argument("--gb", type=float, help="file size in GiB (use 1 or more to show bounded memory)")
    parser.add_argument("--skip-baseline", action="store_true", help="skip pandas_to_sql_multi (slow on big files)")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the asset's stages cumulatively: read + parse/validate, + encrypt, + COPY",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)

    from dw_platform.devenv import embedded

    target = int(args.gb * 1024**3) if args.gb else args.mb * 1024**2
    for key in [k for k in os.environ if k.startswith(("DW_", "DAGSTER_PG_URL", "DAGSTER_HOME"))]:
        del os.environ[key]
    home = embedded.PROJECT_ROOT / ".dw" / "bench-sales"
    os.environ["DW_HOME"] = str(home)
    with embedded.services(env_file=None):
        path, rows = sample_file(home, target)
        print(f"uploading {path.stat().st_size / 1024**2:,.0f} MiB ({rows:,} rows) to Azurite ...", flush=True)
        upload(path)
        methods = (
            ["blob_download"]
            + (list(STAGES) if args.breakdown else [])
            + ["dw_platform_asset"]
            + ([] if args.skip_baseline else ["pandas_to_sql_multi"])
        )
        results = []
        for method in methods:
            reset_targets()
            print(f"  {method} ...", flush=True)
            before = server_cpu(home)
            result = run_worker("benchmarks.bench_sales", method)
            after = server_cpu(home)
            results.append({**result, **{f"{k}_cpu_s": after[k] - before[k] for k in after}})
    report(results, path.stat().st_size, rows)
    return 0


def sample_file(home: Path, target: int) -> tuple[Path, int]:
    from dw_platform.samples import sales

    path = home / f"sales_{target}.csv"
    meta = path.with_suffix(".rows")
    if not (path.exists() and meta.exists()):
        print(f"generating a {target / 1024**2:,.0f} MiB sales CSV at {path} ...", flush=True)
        home.mkdir(parents=True, exist_ok=True)
        meta.write_text(str(sales.write_large(path, target)))
    return path, int(meta.read_text())


def storage():
    from dw_platform.lib.blob import BlobStorage

    return BlobStorage(container=CONTAINER, connection_string=os.environ["DW_BLOB_CONNECTION_STRING"])


def upload(path: Path) -> None:
    blobs = storage()
    blobs.ensure_container()
    client = blobs.container_client().get_blob_client("incoming/" + BLOB_KEY)
    with open(path, "rb") as f:
        client.upload_blob(f, overwrite=True, max_concurrency=4)


def pg_connect():
    import psycopg

    return psycopg.connect(
        host=os.environ["DW_PG_HOST"],
        port=os.environ["DW_PG_PORT"],
        user=os.environ["DW_PG_USER"],
        password=os.environ.get("DW_PG_PASSWORD") or None,
        dbname=os.environ["DW_PG_DATABASE"],
        autocommit=True,
    )


def reset_targets() -> None:
    with pg_connect() as conn:
        conn.execute("drop schema if exists bench cascade")
        # Dropped, not truncated: the asset creates them in their current shape.
        conn.execute("drop table if exists bronze.sales, bronze.sales_quarantine")


def server_cpu(home: Path) -> dict[str, float]:
    """CPU seconds used so far by the benchmark's PostgreSQL (the postmaster, its live processes
    and those that ended) and by its Azurite: the work a load makes them do is part of its cost."""
    azurite = json.loads((home / "azurite" / "endpoint.json").read_text())["pid"]
    return {"postgres": postgres_cpu(home), "azurite": process_tree_cpu(azurite)}


def report(results: list[dict], size: int, rows: int) -> None:
    print()
    print(f"one blob: {size / 1024**2:,.0f} MiB, {rows:,} data rows")
    print(
        f"{'method':<21} {'rows':>11} {'seconds':>8} {'rows/s':>9} {'MiB/s':>7} {'RSS before':>10} {'peak RSS':>9}"
        f" {'CPU s':>6} {'pool CPU s':>10} {'PG CPU s':>8} {'Azurite':>7}"
    )
    print(f"{'':<21} {'':>11} {'':>8} {'':>9} {'':>7} {'MiB':>10} {'MiB':>9} {'':>6} {'':>10} {'':>8} {'CPU s':>7}")
    for r in results:
        rate = r["rows"] / r["seconds"] if r["seconds"] else 0
        print(
            f"{r['method']:<21} {r['rows']:>11,} {r['seconds']:>8.1f} {rate:>9,.0f} "
            f"{size / 1024**2 / r['seconds']:>7.1f} {r['start_rss_mib']:>10.0f} {r['peak_rss_mib']:>9.0f}"
            f" {r['cpu_s']:>6.1f} {r['pool_cpu_s']:>10.1f} {r['postgres_cpu_s']:>8.1f} {r['azurite_cpu_s']:>7.1f}"
        )
    ceiling = next(r for r in results if r["method"] == "blob_download")
    for r in results:
        if r["method"] == "dw_platform_asset":
            wall_rate = r["rows"] / r["wall_seconds"]
            print(
                f"dw_platform_asset: Dagster run wall time {r['wall_seconds']:.1f}s = {wall_rate:,.0f} rows/s "
                f"(loader {r['seconds']:.1f}s), {r['rows_quarantined']:,} rows quarantined; "
                f"{ceiling['seconds'] / r['wall_seconds']:.1%} of the download ceiling"
            )
            cpu = r["cpu_s"] + r["pool_cpu_s"] + r["postgres_cpu_s"] + r["azurite_cpu_s"]
            print(
                f"dw_platform_asset: {cpu:.1f} CPU s in all ({cpu / r['rows'] * 1e6:.2f} per million rows) over "
                f"{r['wall_seconds']:.1f}s wall = {cpu / r['wall_seconds']:.2f} of the {os.cpu_count()} cores"
            )


# ---------------------------------------------------------------- the worker: one method, one process


def worker(method: str) -> int:
    methods = {
        "blob_download": blob_download,
        "dw_platform_asset": dw_platform_asset,
        "pandas_to_sql_multi": pandas_to_sql_multi,
    }
    before = os.times()
    result = methods[method]() if method in methods else stage(method)
    after = os.times()
    result.update(
        method=method,
        peak_rss_mib=peak_rss_mib(),
        cpu_s=after.user + after.system - before.user - before.system,
        pool_cpu_s=after.children_user + after.children_system - before.children_user - before.children_system,
    )
    emit(result)
    return 0


def blob_download() -> dict:
    blobs = storage()
    blob = blobs.version("incoming/" + BLOB_KEY)
    start_rss = peak_rss_mib()
    t0 = time.perf_counter()
    lines = 0
    for chunk in blobs.chunks(blob):
        lines += chunk.count(b"\n")
    return {"rows": lines - 1, "seconds": time.perf_counter() - t0, "start_rss_mib": start_rss}


def dw_platform_asset() -> dict:
    import dagster as dg

    from dw_platform.defs.sales.assets import sales
    from dw_platform.defs.sales.partitions import sales_blobs
    from dw_platform.lib.crypto import FernetKeys
    from dw_platform.lib.warehouse import PostgresWarehouse

    resources = {
        "warehouse": PostgresWarehouse(
            host=os.environ["DW_PG_HOST"],
            port=int(os.environ["DW_PG_PORT"]),
            user=os.environ["DW_PG_USER"],
            password=os.environ.get("DW_PG_PASSWORD", ""),
            database=os.environ["DW_PG_DATABASE"],
        ),
        "sales_storage": storage(),
        "sales_keys": FernetKeys(fernet_keys=os.environ["DW_SALES_FERNET_KEYS"]),
    }
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(sales_blobs.name, [BLOB_KEY])
    # The asset moves the blob to processed/ on success; put it back afterwards for the next method.
    start_rss = peak_rss_mib()
    t0 = time.perf_counter()
    result = dg.materialize([sales], partition_key=BLOB_KEY, resources=resources, instance=instance)
    wall = time.perf_counter() - t0
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    blobs = storage()
    blobs.move(blobs.version("processed/" + BLOB_KEY), "incoming/" + BLOB_KEY)
    return {
        "rows": meta["dagster/row_count"].value,
        "seconds": meta["duration_s"].value,
        "wall_seconds": wall,
        "rows_quarantined": meta["rows_quarantined"].value,
        "start_rss_mib": start_rss,
    }


STAGES = {
    "stage_parse_validate": "download + frame, parse, validate (csv_stream.CsvReader)",
    "stage_encrypt": "... + Fernet on every core (fernet_batch.encrypt_columns)",
    "stage_copy": "... + CSV COPY into bronze with ledger (bronze.load), no Dagster",
}


def stage(method: str) -> dict:
    """The asset's pipeline cut after a stage: the time each stage adds is the difference."""
    from dw_platform.defs.sales.assets import blob_scope, source_name
    from dw_platform.lib import bronze
    from dw_platform.lib.crypto import Cipher
    from dw_platform.lib.prefetch import prefetch
    from dw_platform.sales.ingest import SALES, SalesFile

    blobs = storage()
    blob = blobs.version("incoming/" + BLOB_KEY)
    parsed = SalesFile(source_name(BLOB_KEY), Cipher(os.environ["DW_SALES_FERNET_KEYS"]))
    start_rss = peak_rss_mib()
    t0 = time.perf_counter()
    chunks = prefetch(blobs.chunks(blob))
    if method == "stage_copy":
        with pg_connect() as conn:
            result = bronze.load(
                conn,
                SALES,
                parsed.batches(chunks),
                asset_key="bench",
                scope=blob_scope(BLOB_KEY),
                source=source_name(BLOB_KEY),
                after_copy=parsed.write_quarantine,
            )
        rows = result.rows_loaded
    else:
        stream = parsed.batches(chunks) if method == "stage_encrypt" else parsed.reader.batches(chunks)
        rows = sum(batch.num_rows for batch in stream)
    return {"rows": rows, "seconds": time.perf_counter() - t0, "start_rss_mib": start_rss}


def pandas_to_sql_multi() -> dict:
    import pandas as pd
    import sqlalchemy as sa

    blobs = storage()
    blob = blobs.version("incoming/" + BLOB_KEY)
    url = sa.URL.create(
        "postgresql+psycopg2",
        username=os.environ["DW_PG_USER"],
        password=os.environ.get("DW_PG_PASSWORD") or None,
        database=os.environ["DW_PG_DATABASE"],
        query={"host": os.environ["DW_PG_HOST"], "port": os.environ["DW_PG_PORT"]},
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create schema if not exists bench"))
    start_rss = peak_rss_mib()
    t0 = time.perf_counter()
    rows = 0
    stream = io.BufferedReader(ChunkReader(blobs.chunks(blob)), buffer_size=1 << 20)
    for df in pd.read_csv(stream, chunksize=100_000):
        df.to_sql(
            "sales_pandas", engine, schema="bench", if_exists="append", index=False, method="multi", chunksize=1000
        )
        rows += len(df)
    seconds = time.perf_counter() - t0
    engine.dispose()
    return {"rows": rows, "seconds": seconds, "start_rss_mib": start_rss}


class ChunkReader(io.RawIOBase):
    """A readable binary stream over an iterable of byte chunks (for pandas.read_csv)."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


if __name__ == "__main__":
    sys.exit(main())
