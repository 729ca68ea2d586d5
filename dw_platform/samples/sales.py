"""Sample sales CSV files, as a shop system would drop them into the blob container.

Deterministic for a seed. `sample_files()` gives the demo's set: clean daily files, one with
some bad rows (quarantined, the rest loads), and one malformed file (fails its run).
`write_large()` streams a file of any size for the benchmark.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dw_platform.devenv.demo import DemoOutcome, DemoSession

HEADER = [
    "order_id",
    "order_date",
    "customer_email",
    "customer_name",
    "product",
    "category",
    "region",
    "quantity",
    "unit_price",
    "currency",
]
PRODUCTS = [
    ("Laptop", "Electronics", "999.00"),
    ("Headphones", "Electronics", "79.90"),
    ("Desk Chair", "Furniture", "189.50"),
    ("Standing Desk", "Furniture", "449.00"),
    ("Coffee Beans, 1kg", "Grocery", "18.75"),
    ('Poster "Sunset"', "Decor", "12.00"),
    ("Notebook", "Stationery", "3.49"),
]
REGIONS = ["EU", "NA", "APAC", "LATAM"]
NAMES = [
    "Anna Schmidt",
    "Ben Miller",
    "Chloe Dubois",
    "José Müller",
    "Emma Rossi",
    "Yusuf Khan",
    "Grace O'Neil",
    "Hugo Novak",
]


def rows(count: int, day: date, seed: int = 7, first_id: int = 1) -> Iterator[list[str]]:
    """Clean rows with the usual mess of real exports: stray spaces, mixed case, quoted commas."""
    rng = random.Random(seed)
    for i in range(count):
        product, category, price = rng.choice(PRODUCTS)
        name = rng.choice(NAMES)
        email = name.lower().replace(" ", ".").replace("'", "") + f"{rng.randint(1, 99)}@example.com"
        yield [
            f"SO-{first_id + i:08d}",
            (day - timedelta(days=rng.randint(0, 1))).isoformat(),
            rng.choice([email, email.upper(), f"  {email} "]),
            rng.choice([name, f" {name}  "]),
            product,
            category,
            rng.choice(REGIONS + [r.lower() for r in REGIONS]),
            str(rng.randint(1, 5)),
            price,
            rng.choice(["EUR", "usd", "USD", ""]),
        ]


def to_csv(header: list[str], body: list[list[str]], line_end: str = "\r\n", bom: bool = False) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_end)
    writer.writerow(header)
    writer.writerows(body)
    return (("\ufeff" if bom else "") + out.getvalue()).encode()


BAD_ROWS = [
    # (row, why it is quarantined)
    (["SO-BAD-1", "2026-13-45", "x@example.com", "X", "Laptop", "Electronics", "EU", "1", "999.00", "EUR"], "bad date"),
    (
        ["SO-BAD-2", "2026-11-20", "y@example.com", "Y", "Laptop", "Electronics", "EU", "two", "999.00", "EUR"],
        "bad quantity",
    ),
    (["", "2026-11-20", "z@example.com", "Z", "Notebook", "Stationery", "NA", "1", "3.49", "USD"], "no order id"),
    (
        ["SO-BAD-4", "2026-11-20", "w@example.com", "W", "Notebook", "Stationery", "NA", "1", "-3.49", "USD"],
        "negative price",
    ),
]


def sample_files(day: date) -> dict[str, bytes]:
    """The demo's files, by blob name under incoming/."""
    day_before = day - timedelta(days=1)
    with_bad = list(rows(40, day, seed=3, first_id=5001))
    for offset, (bad, _why) in enumerate(BAD_ROWS):
        with_bad.insert(5 + offset * 7, bad)
    short_row = "SO-BAD-5,2026-11-20,Laptop\r\n"  # too few fields
    files = {
        f"{day_before.isoformat()}/orders_eu.csv": to_csv(HEADER, list(rows(250, day_before, seed=1)), bom=True),
        f"{day.isoformat()}/orders_na.csv": to_csv(HEADER, list(rows(300, day, seed=2, first_id=1001)), line_end="\n"),
        f"{day.isoformat()}/orders_with_bad_rows.csv": to_csv(HEADER, with_bad) + short_row.encode(),
        f"{day.isoformat()}/inventory_malformed.csv": b"sku;warehouse;on_hand\r\nA-1;Berlin;12\r\n",
    }
    return files


def write_large(path, target_bytes: int, seed: int = 11) -> int:
    """Write a CSV of at least `target_bytes` to `path`, streaming; returns the data rows written."""
    rng = random.Random(seed)
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(HEADER)
        day = date(2026, 11, 1)
        while f.tell() < target_bytes:
            batch = list(
                rows(10_000, day + timedelta(days=count // 1_000_000), seed=rng.randint(0, 1 << 30), first_id=count + 1)
            )
            writer.writerows(batch)
            count += len(batch)
    return count


def expected_total(row: list[str]) -> Decimal:
    return (Decimal(row[7]) * Decimal(row[8])).quantize(Decimal("0.01"))


def demo(session: DemoSession) -> DemoOutcome:
    """Upload the sample files to incoming/, evaluate the sales sensor once and run `sales_ingest`
    for each of its run requests, as the daemon would. The malformed sample fails its run on
    purpose (and lands in failed/); any other failure fails the demo."""
    import os

    import dagster as dg

    from dw_platform.defs.sales.partitions import INCOMING, sales_blobs
    from dw_platform.defs.sales.sensors import scan
    from dw_platform.devenv.demo import DemoOutcome, failure_reason
    from dw_platform.lib.blob import BlobStorage

    storage = BlobStorage(
        container=os.environ.get("DW_SALES_CONTAINER", "sales"),
        connection_string=os.environ["DW_BLOB_CONNECTION_STRING"],
    )
    storage.ensure_container()
    files = sample_files(datetime.now(timezone.utc).date())
    for name, data in files.items():
        storage.upload(INCOMING + name, data)
    session.stage(
        f"sales: uploaded {len(files)} sample CSV files to {storage.container}/{INCOMING} "
        f"(one is malformed and fails its run on purpose); ingesting them ..."
    )
    tick = scan(dg.build_sensor_context(instance=session.instance), storage)
    for request in tick.dynamic_partitions_requests:
        session.instance.add_dynamic_partitions(sales_blobs.name, list(request.partition_keys))
    outcome = DemoOutcome(True)
    for request in tick.run_requests:
        key = request.partition_key
        result = session.run_job("sales_ingest", partition_key=key, tags=request.tags)
        expected_failure = key.endswith("_malformed.csv")
        if result.success:
            meta = result.get_asset_materialization_events()[0].materialization.metadata
            outcome.lines.append(
                f"{key:<45} loaded {meta['dagster/partition_row_count'].value:>5,}, "
                f"quarantined {meta['rows_quarantined'].value:>3,} -> processed/"
            )
        else:
            intended = " (as intended)" if expected_failure else ""
            outcome.lines.append(f"{key:<45} FAILED{intended}: {failure_reason(result)} -> failed/")
        outcome.ok = outcome.ok and result.success != expected_failure
        outcome.add_checks(result, key)
    return outcome
