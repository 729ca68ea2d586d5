"""A small operational CRM: `dbo.customer_profile` as the SQL Server seed has it, with dirt.

Deterministic for a given seed and end date. About 3% of rows are deliberately bad: invalid
emails, unparseable phones, unknown or free-text countries, future birth dates, blank names
and exact duplicate rows — what silver's cleansing and validation flags exist for.
`change_customers` then changes every 20th customer on a later day, as the CRM overwrites a row
in place: the next daily load keeps the new version beside the old, so the SCD2 dimension holds
history and `gold.fact_customer_profile_audit` one row per changed attribute.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from dw_platform.devenv.demo import DemoOutcome, DemoSession

SOURCE_TABLE = "dbo.customer_profile"

DDL = """
create schema if not exists dbo;
create table if not exists dbo.customer_profile (
    customer_id      integer,
    first_name       varchar(100),
    last_name        varchar(100),
    email            varchar(255),
    phone            varchar(50),
    country          varchar(100),
    city             varchar(100),
    date_of_birth    date,
    customer_segment varchar(50),
    loyalty_tier     varchar(20),
    marketing_opt_in boolean,
    created_ts       timestamp,
    last_modified_ts timestamp
);
create index if not exists customer_profile_last_modified_ts on dbo.customer_profile (last_modified_ts);
"""

COLUMNS = (
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "country",
    "city",
    "date_of_birth",
    "customer_segment",
    "loyalty_tier",
    "marketing_opt_in",
    "created_ts",
    "last_modified_ts",
)

FIRST = [
    "Anna",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Felix",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Karin",
    "Liam",
    "Maria",
    "Noah",
    "Olivia",
    "Paul",
    "Rosa",
    "Sven",
    "Tara",
    "Yusuf",
]
LAST = [
    "Schmidt",
    "Miller",
    "Dubois",
    "Rossi",
    "Garcia",
    "Novak",
    "Jensen",
    "Smith",
    "Khan",
    "Silva",
    "Brown",
    "Meyer",
    "Martin",
    "Kowalski",
    "Nguyen",
    "Olsen",
]
PLACES = [
    ("US", ["us", "USA", "United States", "U.S.A."], ["New York", "Austin", "Seattle"]),
    ("DE", ["DE", "germany", "Deutschland", " Germany "], ["Berlin", "Hamburg", "Munich"]),
    ("GB", ["uk", "United Kingdom", "GB", "England"], ["London", "Leeds", "Bristol"]),
    ("FR", ["France", "fr", "FRA"], ["Paris", "Lyon", "Nantes"]),
    ("CA", ["Canada", "ca"], ["Toronto", "Montreal"]),
]
SEGMENTS = ["Retail", "retail", "SMALL_BUSINESS", "small business", "Enterprise", "enterprise", None]
TIERS = ["bronze", "Silver", "GOLD", "platinum", None]


def generate(rows: int, end_date: date, days: int = 7, seed: int = 42) -> Iterator[tuple]:
    """Yield customers 1..`rows` (plus ~0.5% exact duplicate rows), last modified in the `days`
    days before `end_date`."""
    rng = random.Random(seed)
    window_start = datetime.combine(end_date - timedelta(days=days), time())
    span_s = days * 86_400
    for customer_id in range(1, rows + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        code, aliases, cities = rng.choice(PLACES)
        modified = window_start + timedelta(seconds=rng.randrange(span_s))
        row = [
            customer_id,
            _messy_case(rng, first),
            _messy_case(rng, last),
            f"{first}.{last}{customer_id}@example.{code.lower()}",
            _phone(rng, code),
            rng.choice(aliases),
            rng.choice(cities),
            date(1940, 1, 1) + timedelta(days=rng.randrange(22_000)),
            rng.choice(SEGMENTS),
            rng.choice(TIERS),
            rng.random() < 0.6,
            modified - timedelta(days=rng.randrange(1, 900)),
            modified,
        ]
        bad = rng.random()
        if bad < 0.03:
            _spoil(rng, row, end_date)
        yield tuple(row)
        if bad > 0.995:  # an exact duplicate of the row, as a careless upstream writes it
            yield tuple(row)


def seed(conn: psycopg.Connection, rows: int = 3_000, end_date: date | None = None, days: int = 7) -> int:
    """Create and fill the source table unless it already holds rows; returns its row count."""
    end_date = end_date or datetime.now(timezone.utc).date()
    conn.execute(DDL)
    count = conn.execute("select count(*) from dbo.customer_profile").fetchone()[0]
    if count:
        return count
    with conn.cursor().copy(f"copy dbo.customer_profile ({', '.join(COLUMNS)}) from stdin") as copy:
        for row in generate(rows, end_date, days):
            copy.write_row(row)
    return conn.execute("select count(*) from dbo.customer_profile").fetchone()[0]


CHANGED_EVERY = 20  # every 20th customer changes (5%)


def change_customers(conn: psycopg.Connection, day: date) -> int:
    """Change every 20th customer last modified before `day`, in place, on that day: a new loyalty
    tier (gold, or platinum for gold members), marketing opt-in flipped, and every third of them a
    new email address. Returns how many customers changed; a second call for the same day changes
    nothing more."""
    changed = conn.execute(
        """
        update dbo.customer_profile
        set loyalty_tier = case when loyalty_tier ilike 'gold' then 'platinum' else 'gold' end,
            marketing_opt_in = not coalesce(marketing_opt_in, false),
            email = case when customer_id %% (3 * %(every)s) = 0 then 'new.' || email else email end,
            last_modified_ts = %(day)s::timestamp + interval '20 hours' + customer_id * interval '1 second'
        where customer_id %% %(every)s = 0 and last_modified_ts < %(day)s::timestamp
        returning customer_id
        """,
        {"day": day, "every": CHANGED_EVERY},
    ).fetchall()
    return len(set(changed))  # an exact duplicate row is one customer


def history_summary(conn: psycopg.Connection) -> str:
    """How much history gold holds: customers with more than one version, and audit rows."""
    versions, audit = conn.execute(
        "select (select count(distinct customer_id) from gold.dim_customer_profile where version_number > 1),"
        " (select count(*) from gold.fact_customer_profile_audit)"
    ).fetchone()
    return (
        f"history: {versions:,} customers with more than one version in gold.dim_customer_profile, "
        f"{audit:,} changed attributes in gold.fact_customer_profile_audit"
    )


def day_range(conn: psycopg.Connection) -> tuple[date, date] | None:
    """First and last day of last_modified_ts in the source, or None when it is empty."""
    first, last = conn.execute(
        "select min(last_modified_ts)::date, max(last_modified_ts)::date from dbo.customer_profile"
    ).fetchone()
    return (first, last) if first else None


def _messy_case(rng: random.Random, name: str) -> str:
    roll = rng.random()
    if roll < 0.05:
        return f"  {name.lower()} "
    if roll < 0.08:
        return name.upper()
    return name


def _phone(rng: random.Random, code: str) -> str:
    digits = "".join(str(rng.randrange(10)) for _ in range(10))
    if code in ("US", "CA"):
        return rng.choice(
            [
                f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
                f"{digits[:3]}.{digits[3:6]}.{digits[6:]}",
                f"+1 {digits[:3]} {digits[3:6]} {digits[6:]}",
            ]
        )
    prefix = {"DE": "+49", "GB": "+44", "FR": "+33"}[code]
    return rng.choice([f"{prefix} {digits}", f"{prefix}{digits}"])


def _spoil(rng: random.Random, row: list, end_date: date) -> None:
    kind = rng.randrange(5)
    if kind == 0:
        row[3] = rng.choice(["not-an-email", "john@", "@example.com", "JOHN DOE@EXAMPLE.COM"])
    elif kind == 1:
        row[4] = rng.choice(["n/a", "12", "call me", ""])
    elif kind == 2:
        row[5] = rng.choice(["Atlantis", "??", None])
    elif kind == 3:
        row[7] = end_date + timedelta(days=rng.randrange(1, 400))
    else:
        row[1] = rng.choice(["", "   ", None])


def demo(session: DemoSession) -> DemoOutcome:
    """Seed the CRM stand-in once and run `customer_daily` for all its days but the last as one run
    (the single-run backfill the UI does): bronze over ODBC, its checks, silver, gold, dbt tests.
    Then the CRM changes some customers on the last day, and that day's run adds their new
    versions: the SCD2 dimension and the audit fact show the history."""
    import os

    from dw_platform.devenv.demo import DemoOutcome, failure_reason
    from dw_platform.devenv.embedded import admin_connection
    from dw_platform.lib.warehouse import server_connection

    with admin_connection("source_crm") as source:
        count = seed(source)
        first_day, last_day = day_range(source)
    backfill_end = max(first_day, last_day - timedelta(days=1))
    session.stage(
        f"customer: {count:,} rows in source_crm.{SOURCE_TABLE}, modified {first_day} .. {last_day}; "
        f"running customer_daily for {first_day} .. {backfill_end} as one run ..."
    )
    backfill = session.run_job(
        "customer_daily",
        tags={
            "dagster/asset_partition_range_start": first_day.isoformat(),
            "dagster/asset_partition_range_end": backfill_end.isoformat(),
        },
    )
    with admin_connection("source_crm") as source:
        changed = change_customers(source, last_day)
    session.stage(f"customer: the CRM changed {changed:,} customers on {last_day}; running customer_daily for it ...")
    daily = session.run_job("customer_daily", partition_key=last_day.isoformat())
    lines = [
        f"customer_daily {first_day} .. {backfill_end}: "
        f"{'SUCCESS' if backfill.success else 'FAILURE: ' + failure_reason(backfill)}",
        f"customer_daily {last_day}: {'SUCCESS' if daily.success else 'FAILURE: ' + failure_reason(daily)}",
    ]
    if daily.success:
        with server_connection(os.environ["DW_PG_DATABASE"]) as conn:
            lines.append(history_summary(conn))
    outcome = DemoOutcome(backfill.success and daily.success, lines)
    outcome.add_checks(backfill, "backfill")
    outcome.add_checks(daily, last_day.isoformat())
    return outcome
