"""Sample data for the __domain__ domain, and its demo step.

`events_csv(day)` is one arrival day's __domain__.csv, deterministic for the day: about 200 events,
a few of the previous day's again with a later state (silver keeps the latest arrival of an
event), and three records bronze must quarantine (no event_id, a time that is not one, an amount
that is not a number).
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dw_platform.devenv.demo import DemoOutcome, DemoSession

HEADER = ["event_id", "occurred_at", "kind", "amount"]
KINDS = ["created", "shipped", "delivered", "returned"]


def events(day: date, count: int = 200, seed: int = 7) -> list[list[str]]:
    rng = random.Random(f"{seed}-{day.isoformat()}")
    start = datetime.combine(day, time(), timezone.utc)
    rows = [
        [
            f"{day:%Y%m%d}-{i:05d}",
            (start + timedelta(seconds=rng.randrange(86_400))).strftime("%Y-%m-%d %H:%M:%S"),
            rng.choice(KINDS),
            f"{rng.uniform(1, 500):.2f}" if rng.random() > 0.1 else "",
        ]
        for i in range(count)
    ]
    previous = day - timedelta(days=1)
    rows += [[f"{previous:%Y%m%d}-{i:05d}", f"{day} 08:00:00", "delivered", "0.00"] for i in range(0, count, 25)]
    rows += [
        ["", f"{day} 09:00:00", "created", "1.00"],
        [f"{day:%Y%m%d}-bad-time", "yesterday", "created", "1.00"],
        [f"{day:%Y%m%d}-bad-amount", f"{day} 10:00:00", "created", "n/a"],
    ]
    return rows


def events_csv(day: date) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(events(day))
    return out.getvalue().encode()


def demo(session: DemoSession) -> DemoOutcome:
    """Land the two days before today in the landing zone, then run `__domain___daily` for each day."""
    from dw_platform.defs.__domain__.partitions import landed_path
    from dw_platform.defs.__domain__.resources import landing_zone
    from dw_platform.devenv.demo import DemoOutcome, failure_reason

    zone = landing_zone().process_config_and_initialize().landing()  # the zone the code location uses
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=2), today - timedelta(days=1)]  # daily partitions exist for complete days
    for day in days:
        zone.put(landed_path(day.isoformat()), events_csv(day))
    session.stage(f"__domain__: landed __domain__.csv for {days[0]} and {days[1]}; running __domain___daily ...")
    outcome = DemoOutcome(True)
    for day in days:
        result = session.run_job("__domain___daily", partition_key=day.isoformat())
        status = "SUCCESS" if result.success else "FAILURE: " + failure_reason(result)
        outcome.lines.append(f"__domain___daily {day}: {status}")
        outcome.ok = outcome.ok and result.success
        outcome.add_checks(result, day.isoformat())
    return outcome
