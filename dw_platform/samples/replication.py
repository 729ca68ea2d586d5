"""The replication domain's sample source: an operational PostgreSQL database `source_app`, with
tables of different shapes (composite primary keys, a table without a primary key, numeric,
timestamptz, jsonb, arrays, bytea, text with odd characters, nulls everywhere) and a staging table
the sources.yaml patterns exclude. Deterministic for a seed; `seed()` fills only empty tables.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

import psycopg
from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from dw_platform.devenv.demo import DemoOutcome, DemoSession

DDL = """
create table if not exists customers (
    id              integer generated always as identity primary key,
    full_name       text,
    email           varchar(120),
    created_at      timestamptz not null,
    balance         numeric(12,2),
    loyalty_points  bigint,
    tags            text[],
    profile         jsonb,
    avatar          bytea,
    is_active       boolean,
    birth_date      date,
    rating          real
);
create table if not exists products (
    sku             varchar(20) primary key,
    name            text not null,
    price           numeric(10,2),
    attributes      jsonb,
    dimensions_cm   integer[],
    image           bytea,
    released_on     date,
    updated_at      timestamp,
    weight_kg       double precision,
    external_id     uuid
);
create table if not exists orders (
    order_id        bigint primary key,
    customer_id     integer,
    ordered_at      timestamptz not null,
    status          text,
    total           numeric(14,2),
    note            text,
    shipped_at      timestamptz
);
create table if not exists order_lines (
    order_id        bigint not null,
    line_no         smallint not null,
    sku             varchar(20),
    quantity        integer,
    unit_price      numeric(10,2),
    discount        numeric(5,4),
    pick_time       time,
    primary key (order_id, line_no)
);
create table if not exists audit_log (
    logged_at       timestamptz,
    actor           text,
    action          text,
    detail          jsonb
);
-- No primary key: its owner gives it the whole row as replica identity, as a publication of all
-- tables needs (else its updates and deletes fail on the source); the replication role cannot.
alter table audit_log replica identity full;
create table if not exists s_staging_import (
    line            text
);
"""
# Text that breaks naive loaders: quotes, separators, escapes, newlines, accents, emoji, a BOM.
ODD_TEXTS = [
    'Zoë "Zee" O\'Brien',
    "tab\there",
    "line\nbreak\r\nCRLF",
    "back\\slash \\N",
    "semi;colon,comma|pipe",
    "emoji 🚀🐘",
    "\ufeffBOM first",
    "   leading and trailing   ",
    "",
    "Ünïcödé ß 汉字",
    "NULL",
    "%_like_%",
]
STATUSES = ["new", "paid", "shipped", "cancelled", None]
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _maybe(rng: random.Random, value, null_rate: float = 0.2):
    return None if rng.random() < null_rate else value


def customers(rng: random.Random, count: int):
    for i in range(count):
        yield (
            _maybe(rng, rng.choice(ODD_TEXTS) if i % 7 == 0 else f"Customer {i:05d}"),
            _maybe(rng, f"c{i}@example.com"),
            START + timedelta(seconds=rng.randint(0, 300 * 86400), microseconds=rng.randint(0, 999_999)),
            _maybe(rng, Decimal(rng.randint(-100_000, 10_000_000)) / 100),
            _maybe(rng, rng.randint(0, 5_000_000_000)),
            _maybe(rng, rng.sample(["vip", "b2b", "new", "churn-risk", "a,b", 'q"uote'], rng.randint(0, 3))),
            _maybe(
                rng, Jsonb({"segment": rng.choice(["a", "b"]), "score": rng.random(), "nested": {"n": i, "ok": True}})
            ),
            _maybe(rng, rng.randbytes(rng.randint(0, 64))),
            _maybe(rng, rng.random() < 0.8),
            _maybe(rng, date(1950, 1, 1) + timedelta(days=rng.randint(0, 20000))),
            _maybe(rng, rng.choice([0.1, 3.5, 4.25, -0.0, 1e-7])),
        )


def products(rng: random.Random, count: int):
    import uuid

    for i in range(count):
        yield (
            f"SKU-{i:05d}",
            rng.choice(ODD_TEXTS[:6]) + f" product {i}",
            _maybe(rng, Decimal(rng.randint(1, 9_999_999)) / 100),
            _maybe(rng, Jsonb({"color": rng.choice(["red", "blue"]), "sizes": [1, 2, 3], "unicode": "ß"})),
            _maybe(rng, [rng.randint(1, 200) for _ in range(3)]),
            _maybe(rng, bytes([0, 1, 2, 255, 254]) + rng.randbytes(8)),
            _maybe(rng, date(2020, 1, 1) + timedelta(days=rng.randint(0, 2000))),
            _maybe(
                rng,
                datetime(2026, 1, 1) + timedelta(seconds=rng.randint(0, 10**7), microseconds=rng.randint(0, 10**6 - 1)),
            ),
            _maybe(rng, rng.uniform(0.01, 80.0)),
            _maybe(rng, uuid.UUID(int=rng.getrandbits(128))),
        )


def orders(rng: random.Random, count: int, customer_count: int):
    for i in range(1, count + 1):
        ordered = START + timedelta(seconds=rng.randint(0, 300 * 86400))
        yield (
            i,
            _maybe(rng, rng.randint(1, customer_count), 0.05),
            ordered,
            rng.choice(STATUSES),
            _maybe(rng, Decimal(rng.randint(0, 5_000_000)) / 100),
            _maybe(rng, rng.choice(ODD_TEXTS), 0.7),
            _maybe(rng, ordered + timedelta(hours=rng.randint(1, 96)), 0.5),
        )


def order_lines(rng: random.Random, order_count: int, product_count: int):
    for order_id in range(1, order_count + 1):
        for line_no in range(1, rng.randint(1, 4) + 1):
            yield (
                order_id,
                line_no,
                _maybe(rng, f"SKU-{rng.randrange(product_count):05d}", 0.02),
                _maybe(rng, rng.randint(1, 10)),
                _maybe(rng, Decimal(rng.randint(1, 99_999)) / 100),
                _maybe(rng, Decimal(rng.randint(0, 5000)) / 10000),
                _maybe(rng, time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999))),
            )


def audit_log(rng: random.Random, count: int):
    for i in range(count):
        row = (
            _maybe(rng, START + timedelta(seconds=i * 37)),
            rng.choice(["alice", "bob", None]),
            rng.choice(["login", "export", "delete"]),
            _maybe(rng, Jsonb({"i": i % 50})),
        )
        yield row
        if i % 100 == 0:
            yield row  # exact duplicate rows: a table without a key can hold them


TABLES = {
    "customers": (
        "full_name, email, created_at, balance, loyalty_points, tags, profile, avatar, is_active, birth_date, rating"
    ),
    "products": "sku, name, price, attributes, dimensions_cm, image, released_on, updated_at, weight_kg, external_id",
    "orders": "order_id, customer_id, ordered_at, status, total, note, shipped_at",
    "order_lines": "order_id, line_no, sku, quantity, unit_price, discount, pick_time",
    "audit_log": "logged_at, actor, action, detail",
    "s_staging_import": "line",
}


def seed(
    conn: psycopg.Connection,
    customer_count: int = 2000,
    product_count: int = 300,
    order_count: int = 5000,
    audit_count: int = 1500,
    seed: int = 9,
) -> dict[str, int]:
    """Create the sample tables and fill the empty ones; returns rows per table."""
    rng = random.Random(seed)
    conn.execute(DDL)
    rows = {
        "customers": customers(rng, customer_count),
        "products": products(rng, product_count),
        "orders": orders(rng, order_count, customer_count),
        "order_lines": order_lines(rng, order_count, product_count),
        "audit_log": audit_log(rng, audit_count),
        "s_staging_import": ((f"raw line {i}",) for i in range(100)),
    }
    counts = {}
    for table, generated in rows.items():
        if conn.execute(f"select not exists (select from {table})").fetchone()[0]:
            with conn.transaction(), conn.cursor().copy(f"copy {table} ({TABLES[table]}) from stdin") as copy:
                for row in generated:
                    copy.write_row(row)
        counts[table] = conn.execute(f"select count(*) from {table}").fetchone()[0]
    return counts


WORKLOAD = """
insert into customers (full_name, email, created_at, balance, tags, profile, is_active)
    select 'Demo customer ' || g, 'demo' || g || '@example.com', now(), g * 1.5, '{demo}', '{"demo": true}', true
    from generate_series(1, 40) g;
insert into orders (order_id, customer_id, ordered_at, status, total)
    select (select coalesce(max(order_id), 0) from orders) + g, g, now(), 'new', g * 10.25 from generate_series(1, 60) g;
update orders set status = 'paid' where order_id % 37 = 0;
update customers set balance = coalesce(balance, 0) + 1, tags = array_append(tags, 'updated') where id % 17 = 0;
delete from order_lines where order_id in (select order_id from orders order by order_id limit 5);
delete from orders where order_id in (select order_id from orders order by order_id limit 5);
alter table customers add column if not exists loyalty_tier text;
update customers set loyalty_tier = (array['bronze', 'silver', 'gold'])[1 + id % 3] where id % 5 = 0;
create table if not exists promotions (code text primary key, percent numeric(5,2), valid_until date, rules jsonb);
insert into promotions values ('SPRING', 10.00, '2026-05-31', '{"min_total": 50}'), ('VIP', 25.50, null, null)
    on conflict (code) do update set percent = excluded.percent + 0.25;
truncate audit_log;
insert into audit_log values (now(), 'demo', 'truncate-and-refill', '{"rows": 2}'), (now(), 'demo', 'login', null);
"""


def owner_connection() -> psycopg.Connection:
    """The sample source as a role that may create and change its tables: the embedded server's
    superuser (the pipeline's replication role only reads), else the configured URL's role."""
    import os

    from dw_platform.devenv import embedded

    try:
        return embedded.source_admin_connection()
    except RuntimeError:
        return psycopg.connect(os.environ["DW_REPLICATION_SOURCE_URL"], autocommit=True)


def bulk_load_all(session: DemoSession, source: str) -> tuple:
    """Discover the source's tables, then bulk-load all of them as one run (one snapshot)."""
    from dw_platform.defs.replication.partitions import table_partitions

    discovered = session.run_job("replication_discover")
    keys = session.instance.get_dynamic_partitions(table_partitions(source).name)
    if not discovered.success or not keys:
        return discovered, keys
    result = session.run_job(
        f"replication_bulk_load_{source}",
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )
    return result, keys


def demo(session: DemoSession) -> DemoOutcome:
    """Seed source_app, discover and bulk-load it into Iceberg, validate; print tables, rows and
    start LSN. Then run a workload on the source (inserts, updates, deletes, ALTER TABLE ADD COLUMN,
    a new table, a truncate), let the CDC sensor request its run as the daemon would, run it, and
    compare every table's rows and content hash with the source."""
    from dw_platform.devenv.demo import DemoOutcome, failure_reason
    from dw_platform.lib.lakehouse import lakehouse_from_env
    from dw_platform.replication.status import ReplicationMeta

    with owner_connection() as conn:
        counts = seed(conn)
    session.stage(
        f"replication: seeded source_app ({sum(counts.values()):,} rows in {len(counts)} tables); "
        "discovering and bulk-loading it into Iceberg ..."
    )
    result, keys = bulk_load_all(session, "source_app")
    outcome = DemoOutcome(result.success)
    if not result.success:
        outcome.lines.append(f"bulk load FAILED: {failure_reason(result)}")
        return outcome
    outcome.add_checks(result)
    loaded = len(result.get_asset_materialization_events())
    statuses = ReplicationMeta(lakehouse_from_env(), "source_app").statuses()
    for _key, status in sorted(statuses.items()):
        outcome.lines.append(
            f"{status['iceberg_table']:<42} {status['status']:<9} bulk-loaded {status['rows_loaded']:>7,} "
            f"rows, start LSN {status['start_lsn']} ({status['snapshot_kind']})"
        )
    outcome.lines.append(
        f"{loaded} of {len(keys)} tables loaded now (completed ones are skipped on a re-run); "
        "excluded by pattern: s_staging_import"
    )
    validation = session.run_job("validate_lakehouse")
    outcome.ok = outcome.ok and validation.success
    outcome.lines.append(
        "validate_lakehouse: "
        + (
            "every selected table is in the lakehouse"
            if validation.success
            else f"FAILED: {failure_reason(validation)}"
        )
    )
    change_data_capture(session, outcome)
    return outcome


def change_data_capture(session: DemoSession, outcome: DemoOutcome) -> None:
    """The workload on the source, one sensor evaluation and the CDC run it requests, then every
    lakehouse table compared with its source table."""
    import dagster as dg

    from dw_platform.defs.replication.sensors import evaluate
    from dw_platform.devenv.demo import failure_reason
    from dw_platform.lib.lakehouse import lakehouse_from_env
    from dw_platform.replication.sources import load_sources
    from dw_platform.replication.status import ReplicationMeta
    from dw_platform.replication.validate import compare_table

    source, lakehouse = load_sources()["source_app"], lakehouse_from_env()
    with owner_connection() as conn:
        conn.execute(WORKLOAD)
    session.stage(
        "replication: ran a workload on source_app (inserts, updates, deletes, ADD COLUMN, a new table, "
        "a truncate); capturing and applying the changes ..."
    )
    request = evaluate(
        dg.build_sensor_context(instance=session.instance, resources={"lakehouse": lakehouse}), source, lakehouse
    )
    if not isinstance(request, dg.RunRequest):
        outcome.ok = False
        outcome.lines.append(f"the CDC sensor requested no run: {request.skip_message}")
        return
    result = session.run_job("replication_cdc_source_app", tags=request.tags)
    outcome.add_checks(result, "change data capture")
    if not result.success:
        outcome.ok = False
        outcome.lines.append(f"change data capture FAILED: {failure_reason(result)}")
        return
    captured = next(
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["bronze", "cdc_events", "source_app"])
    ).materialization.metadata
    outcome.lines.append(
        f"change data capture: {captured['events_captured'].value:,} changes "
        f"{dict(captured['by_op'].value)} in {captured['transactions'].value} transaction(s), "
        f"slot at {captured['confirmed_lsn'].value}"
    )
    outcome.lines.append(
        f"{'table':<28} {'source rows':>11} {'lakehouse':>10}  {'source hash':<16} {'lakehouse hash':<16}"
    )
    for key, status in sorted(ReplicationMeta(lakehouse, "source_app").statuses().items()):
        if status["status"] != "completed":
            continue
        c = compare_table(source, lakehouse, key, status)
        outcome.ok = outcome.ok and c["match"]
        outcome.lines.append(
            f"{key:<28} {c['rows_source']:>11,} {c['rows_lakehouse']:>10,}  {c['hash_source']:<16} "
            f"{c['hash_lakehouse']:<16} {'match' if c['match'] else 'DIFFER'}"
        )
