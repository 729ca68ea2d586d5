"""The SoftCart e-commerce system as sample data: its MariaDB tables and its web server's access log.

`create_source_tables` makes the operational schema (`sales_data`, `products`, `customers`);
`seed_reference_data` and `insert_sales` fill it with generated rows, some of them deliberately bad
(unknown product, negative quantity, zero price, null timestamp). `access_log_lines` writes an
Apache/nginx Common/Combined Log Format log with the quirks real servers produce. Deterministic
for a seed. `demo(session)` is the domain's step of `dw demo`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg
    import pyodbc

    from dw_platform.devenv.demo import DemoOutcome, DemoSession

SOURCE_DDL = (
    """
    create table if not exists sales_data (
        rowid       bigint not null auto_increment primary key,
        product_id  int,
        customer_id int,
        quantity    int,
        price       decimal(10,2),
        `timestamp` datetime
    ) engine = InnoDB
    """,
    """
    create table if not exists products (
        product_id   int not null primary key,
        product_name varchar(200) not null,
        category     varchar(100)
    ) engine = InnoDB
    """,
    """
    create table if not exists customers (
        customer_id int not null primary key,
        country     varchar(100)
    ) engine = InnoDB
    """,
)

# (name, category, list price); product ids are 101, 102, ... in this order.
PRODUCTS = [
    ("Wireless Mouse", "Electronics", "24.99"),
    ("USB-C Hub", "Electronics", "39.90"),
    ("Noise-Cancelling Headphones", "Electronics", "199.00"),
    ("4K Monitor", "Electronics", "329.00"),
    ("Paperback Novel", "Books", "12.50"),
    ("Cookbook", "Books", "29.95"),
    ("Data Engineering Handbook", "Books", "54.00"),
    ("Chef's Knife", "Home & Kitchen", "69.00"),
    ("French Press", "Home & Kitchen", "34.00"),
    ("Building Blocks Set", "Toys", "49.99"),
    ("Puzzle 1000 pcs", "Toys", "17.99"),
    ("Yoga Mat", "Sports", "25.00"),
    ("Running Shoes", "Sports", "119.00"),
    ("Rain Jacket", "Clothing", "89.00"),
    ("Wool Socks (3 pairs)", "Clothing", "19.90"),
    ("Face Cream", "Beauty", "22.40"),
    ("Espresso Beans 1kg", "Grocery", "18.75"),
    ("Garden Hose 20m", "Garden", "31.00"),  # a category missing from the reference list: 'unknown' in silver
]
FIRST_PRODUCT_ID = 101
UNKNOWN_PRODUCT_ID = 9999
# Spellings as the shop stores them; None and 'Atlantis' are not in the reference list.
COUNTRIES = [
    "United States",
    "United States",
    "United States",
    "Germany",
    "United Kingdom",
    "France",
    "Canada",
    "India",
    "Brazil",
    "Japan",
    "Australia",
    "Spain",
    "Italy",
    "Netherlands",
    "Mexico",
    "Sweden",
]


def create_source_tables(conn: pyodbc.Connection) -> None:
    cursor = conn.cursor()
    for statement in SOURCE_DDL:
        cursor.execute(statement)


def seed_reference_data(conn: pyodbc.Connection, customers: int = 500, seed: int = 8) -> None:
    """Products and customers (replacing what is there); a few customers have no or an unknown country."""
    rng = random.Random(seed)
    cursor = conn.cursor()
    cursor.execute("delete from products")
    cursor.execute("delete from customers")
    _insert(
        cursor,
        "products",
        ("product_id", "product_name", "category"),
        [(FIRST_PRODUCT_ID + i, name, category) for i, (name, category, _) in enumerate(PRODUCTS)],
    )
    rows = []
    for customer_id in range(1, customers + 1):
        roll = rng.random()
        country = None if roll < 0.01 else "Atlantis" if roll < 0.015 else rng.choice(COUNTRIES)
        rows.append((customer_id, country))
    _insert(cursor, "customers", ("customer_id", "country"), rows)


def sales_rows(
    count: int, start: datetime, end: datetime, customers: int = 500, seed: int = 8, bad_every: int = 97
) -> Iterator[tuple]:
    """(product_id, customer_id, quantity, price, timestamp) in time order; every `bad_every`-th row
    is bad in one of four ways (unknown product, negative quantity, zero price, null timestamp)."""
    rng = random.Random(seed)
    span = (end - start).total_seconds()
    for i in range(count):
        index = rng.randrange(len(PRODUCTS))
        product_id = FIRST_PRODUCT_ID + index
        quantity = rng.choice((1, 1, 1, 2, 2, 3, 5))
        price = Decimal(PRODUCTS[index][2])
        ts: datetime | None = start + timedelta(seconds=span * (i + rng.random()) / max(count, 1))
        ts = ts.replace(microsecond=0)
        customer_id = rng.randint(1, customers)
        if bad_every and i % bad_every == bad_every - 1:
            kind = (i // bad_every) % 4
            if kind == 0:
                product_id = UNKNOWN_PRODUCT_ID
            elif kind == 1:
                quantity = -quantity
            elif kind == 2:
                price = Decimal("0.00")
            else:
                ts = None
        yield product_id, customer_id, quantity, price, ts


SALES_COLUMNS = ("product_id", "customer_id", "quantity", "price", "timestamp")


def insert_sales(conn: pyodbc.Connection, rows: Iterator[tuple] | Sequence[tuple], chunk: int = 1000) -> int:
    """Insert sales rows (rowid assigned by the server, in insertion order); returns the count."""
    return _insert(conn.cursor(), "sales_data", SALES_COLUMNS, rows, chunk)


def _insert(cursor, table: str, columns: Sequence[str], rows, chunk: int = 1000) -> int:
    """Multi-row INSERTs of `chunk` rows: one round trip per chunk, not per row."""
    names = ", ".join(f"`{c}`" for c in columns)
    placeholder = "(" + ", ".join("?" * len(columns)) + ")"
    count = 0
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == chunk:
            cursor.execute(
                f"insert into {table} ({names}) values " + ", ".join([placeholder] * chunk),
                [v for r in batch for v in r],
            )
            count += chunk
            batch = []
    if batch:
        cursor.execute(
            f"insert into {table} ({names}) values " + ", ".join([placeholder] * len(batch)),
            [v for r in batch for v in r],
        )
        count += len(batch)
    return count


# --- the web server's access log ---------------------------------------------------------------

PATHS = [
    "/",
    "/",
    "/",
    "/products",
    "/products?page=2",
    "/product/101",
    "/product/104",
    "/product/112",
    "/cart",
    "/checkout",
    "/search?q=headphones",
    "/search?q=r%C3%A9sum%C3%A9",
    "/static/app.js",
    "/static/style.css",
    "/img/logo.png",
    "/api/v1/cart/items",
    "/account/login",
    "/favicon.ico",
]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.4.0",
    "python-requests/2.31.0",
    'Mozilla/5.0 (compatible; \\"QuoteBot\\" 1.0; +https://example.com/bot)',  # escaped quotes, as Apache writes them
]
IPS = [
    "203.0.113.7",
    "198.51.100.23",
    "192.0.2.44",
    "2001:db8::1",
    "2001:db8:85a3::8a2e:370:7334",
    "::1",
    "10.0.0.12",
    "172.16.5.4",
    "::ffff:192.0.2.128",
]
REFERRERS = ["-", "-", "https://www.google.com/", "https://softcart.example/products", "https://softcart.example/"]
STATUSES = [200] * 40 + [304] * 5 + [301, 302, 404, 404, 403, 500, 503]
METHODS = ["GET"] * 12 + ["POST", "HEAD"]

# Lines real servers write that are not ordinary requests: they must parse (they are valid log lines).
QUIRKY_LINES = [
    '192.0.2.1 - - [23/Nov/2026:10:15:32 +0000] "-" 408 - "-" "-"',  # a connection closed before a request
    '198.51.100.9 - - [23/Nov/2026:10:15:33 +0000] "\\x16\\x03\\x01\\x02\\x00\\x01" 400 226 "-" "-"',  # TLS on port 80
    '203.0.113.50 - - [23/Nov/2026:10:15:34 +0000] "GET /../../etc/passwd" 400 0 "-" "masscan/1.3"',  # HTTP/0.9 style
    '2001:db8::bad:1 - frank [23/Nov/2026:03:15:35 -0700] "POST /account/login HTTP/2.0" 302 - '
    '"https://softcart.example/account/login" "Mozilla/5.0 \\"Edge\\" 120"',
    '192.0.2.77 - - [23/Nov/2026:19:45:36 +0930] "GET /index.php?s=/Index/\\x5Cthink\\x5Capp/invokefunction HTTP/1.1" 404 153',
]
# Lines that do not parse: they go to the quarantine table with the reason.
BAD_LINES = [
    "this is not a log line",
    '192.0.2.5 - - [23/Nov/2026:10:16:00 +0000] "GET / HTTP/1.1" 200',  # truncated: no size
    '192.0.2.6 - - [31/Foo/2026:10:16:00 +0000] "GET / HTTP/1.1" 200 12',  # no such month
    '192.0.2.7 - - [23/Nov/2026:10:16:00 +0000] "GET / HTTP/1.1" 2000 12',  # status is not three digits
]


def access_log_lines(count: int, start: datetime, seed: int = 5, quirks: bool = True) -> Iterator[str]:
    """`count` log lines (without line ends) from `start` on, a few seconds apart: Combined Log
    Format mostly, Common Log Format for some; with `quirks`, the lines of QUIRKY_LINES and
    BAD_LINES spread through the file."""
    rng = random.Random(seed)
    extra = (QUIRKY_LINES + BAD_LINES) if quirks else []
    every = max(count // (len(extra) + 1), 1) if extra else 0
    ts = start.astimezone(timezone.utc)
    pending = list(extra)
    stamp_second, stamp = None, ""
    for i in range(count):
        if pending and i and i % every == 0:
            yield pending.pop(0)
            continue
        ts += timedelta(milliseconds=rng.randint(0, 4000))
        second = ts.replace(microsecond=0)
        if second != stamp_second:
            stamp_second, stamp = second, second.strftime("%d/%b/%Y:%H:%M:%S +0000")
        method = rng.choice(METHODS)
        path = rng.choice(PATHS)
        status = rng.choice(STATUSES)
        size = "-" if status in (304, 301, 302) or method == "HEAD" else str(rng.randint(120, 90_000))
        user = "-" if rng.random() > 0.02 else "alice"
        common = f'{rng.choice(IPS)} - {user} [{stamp}] "{method} {path} HTTP/1.1" {status} {size}'
        if rng.random() < 0.1:
            yield common  # Common Log Format: no referrer, no user agent
        else:
            yield f'{common} "{rng.choice(REFERRERS)}" "{rng.choice(AGENTS)}"'


def access_log(count: int, start: datetime, seed: int = 5, quirks: bool = True) -> bytes:
    return "".join(line + "\n" for line in access_log_lines(count, start, seed, quirks)).encode()


def demo(session: DemoSession) -> DemoOutcome:
    """Seed the SoftCart MariaDB, run the sync, insert new sales, run it again (it loads only
    those), then drop a sample access log into the weblogs landing zone and ingest it as the
    sensor would; the file ends archived."""
    import os

    import dagster as dg
    import pyodbc

    from dw_platform.defs.softcart.partitions import INCOMING, weblog_files
    from dw_platform.defs.softcart.resources import weblogs_landing_zone
    from dw_platform.defs.softcart.sensors import scan_weblogs
    from dw_platform.devenv.demo import DemoOutcome, failure_reason

    source_conn_string = os.environ["DW_SOFTCART_ODBC"]

    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    with pyodbc.connect(source_conn_string, autocommit=True) as conn:
        create_source_tables(conn)
        existing = conn.cursor().execute("select count(*) from sales_data").fetchval()
        if not existing:
            seed_reference_data(conn)
            insert_sales(conn, sales_rows(5_000, now - timedelta(days=400), now - timedelta(days=1)))
    session.stage("softcart: seeded the SoftCart MariaDB (sales_data, products, customers); running softcart_sync ...")
    outcome = DemoOutcome(True)
    first = session.run_job("softcart_sync")
    outcome.add_checks(first, "first sync")
    outcome.lines.append(_sync_line("first sync ", first))
    with pyodbc.connect(source_conn_string, autocommit=True) as conn:
        added = insert_sales(conn, sales_rows(250, now - timedelta(hours=20), now, seed=int(now.timestamp())))
    session.stage(f"softcart: inserted {added} new sales rows; running softcart_sync again ...")
    second = session.run_job("softcart_sync")
    outcome.add_checks(second, "second sync")
    outcome.lines.append(_sync_line("second sync", second))
    outcome.ok = first.success and second.success

    zone = weblogs_landing_zone().process_config_and_initialize().landing()
    name = f"{now:%Y-%m-%d}/access-{now:%H%M%S}.log"
    zone.put(INCOMING + name, access_log(3_000, datetime.now(timezone.utc) - timedelta(hours=3)))
    session.stage(f"softcart: dropped a sample access log into {INCOMING}{name}; ingesting it ...")
    tick = scan_weblogs(dg.build_sensor_context(instance=session.instance), zone)
    for request in tick.dynamic_partitions_requests:
        session.instance.add_dynamic_partitions(weblog_files.name, list(request.partition_keys))
    for request in tick.run_requests:
        result = session.run_job("softcart_weblogs", partition_key=request.partition_key, tags=request.tags)
        outcome.add_checks(result, request.partition_key)
        if result.success:
            meta = _metadata(result, "web_access_log")
            outcome.lines.append(
                f"access log {request.partition_key}: loaded {meta['dagster/partition_row_count'].value:,} "
                f"lines, quarantined {meta['lines_quarantined'].value:,} -> {meta['archived_to'].value}"
            )
        else:
            outcome.lines.append(f"access log {request.partition_key}: FAILED: {failure_reason(result)}")
        outcome.ok = outcome.ok and result.success
    return outcome


def _metadata(result: dg.ExecuteInProcessResult, name: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.materialization.asset_key.path[-1] == name:
            return event.materialization.metadata
    return {}


def _sync_line(label: str, result: dg.ExecuteInProcessResult) -> str:
    from dw_platform.devenv.demo import failure_reason

    if not result.success:
        return f"{label}: FAILED: {failure_reason(result)}"
    meta = _metadata(result, "softcart_sales_data")
    loaded = meta["dagster/row_count"].value
    rowids = f" (rowids {meta['first_rowid'].value:,} .. {meta['last_rowid'].value:,})" if loaded else ""
    return f"{label}: sales_data loaded {loaded:,} new rows{rowids}, star schema rebuilt"
