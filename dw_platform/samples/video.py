"""Sample files for the video domain: users.csv, viewing_sessions.csv and content.json per day.

Deterministic for a seed. Values arrive the way real exports do: mixed-case categories
("Mobile", " tv ", "premium"), dates in two formats, some missing values, repeated user rows
(a later version wins in silver) and one malformed content document (quarantined).
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dw_platform.devenv.demo import DemoOutcome, DemoSession

USERS_HEADER = ["user_id", "email", "country", "subscription_tier", "signup_date", "updated_at"]
SESSIONS_HEADER = [
    "session_id",
    "user_id",
    "content_id",
    "device",
    "country",
    "started_at",
    "watch_seconds",
    "completion_pct",
]
DEVICES = ["Mobile", "mobile", " TV ", "tv", "Desktop", "Tablet", "smart-tv"]
COUNTRIES = ["us", "US", "de", "GB", "fr", "br"]
TIERS = ["Premium", "basic", "STANDARD", "free", ""]
GENRES = ["Drama", "Comedy", "Documentary", "Thriller", "Animation", "Sci-Fi"]


def to_csv(header: list[str], rows: list[list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def users(day: date, count: int = 40, seed: int = 7) -> list[list]:
    rng = random.Random(seed)
    rows = []
    for i in range(1, count + 1):
        signup = day - timedelta(days=rng.randint(30, 900))
        signup_text = signup.isoformat() if i % 3 else signup.strftime("%Y/%m/%d")
        updated = datetime(day.year, day.month, day.day, 1, 0, tzinfo=timezone.utc) + timedelta(minutes=i)
        rows.append(
            [
                f"U{i:04d}",
                f"user{i}@example.com",
                rng.choice(COUNTRIES),
                rng.choice(TIERS),
                signup_text,
                updated.isoformat(),
            ]
        )
    # A later version of user 1 in the same file: silver keeps this one.
    rows.append(["U0001", "user1@example.com", "DE", "premium", rows[0][4], (updated + timedelta(hours=1)).isoformat()])
    return rows


def content_documents(count: int = 12, seed: int = 7, extra_field: bool = False) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(1, count + 1):
        doc = {
            "content_id": f"C{i:03d}",
            "title": f"Title {i}",
            "type": "movie" if i % 2 else "series",
            "release": {"year": 2000 + i, "studio": f"Studio {i % 3}"},
            "runtime_minutes": 90 + i,
            "genres": rng.sample(GENRES, k=1 + i % 3),
            "cast": [{"name": f"Actor {i}-{j}", "role": "lead" if j == 1 else "support"} for j in range(1, 3)],
            "ratings": {"imdb": round(5 + rng.random() * 4, 1), "rotten_tomatoes": rng.randint(40, 99)},
            "availability": {"us": True, "de": bool(i % 2), "br": False},
        }
        if extra_field:
            doc["maturity_rating"] = "PG-13"
        docs.append(doc)
    return docs


def content_file(docs: list[dict], malformed: bool = True) -> bytes:
    """JSON Lines: one document per line, plus (by default) one line that is not JSON."""
    lines = [json.dumps(d) for d in docs]
    if malformed:
        lines.insert(3, '{"content_id": "C-BROKEN", "title": "cut off')
    return ("\n".join(lines) + "\n").encode()


def sessions(day: date, user_count: int = 40, content_count: int = 12, count: int = 200, seed: int = 7) -> list[list]:
    rng = random.Random(seed)
    rows = []
    for i in range(1, count + 1):
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(seconds=rng.randint(0, 86_399))
        completion = rng.choice([100, 95, 80, 50, 20, 5, ""])
        watch = "" if completion == "" else int(60 * 100 * completion / 100)
        started = start.strftime("%Y-%m-%d %H:%M:%S") if i % 4 else start.isoformat()
        rows.append(
            [
                f"S{day:%Y%m%d}-{i:05d}",
                f"U{rng.randint(1, user_count):04d}",
                f"C{rng.randint(1, content_count):03d}",
                rng.choice(DEVICES),
                rng.choice(COUNTRIES),
                started,
                watch,
                completion,
            ]
        )
    return rows


def sample_files(day: date, extra_field: bool = False) -> dict[str, bytes]:
    """The files of one arrival day, by name within the day's folder."""
    return {
        "users.csv": to_csv(USERS_HEADER, users(day)),
        "viewing_sessions.csv": to_csv(SESSIONS_HEADER, sessions(day)),
        "content.json": content_file(content_documents(extra_field=extra_field)),
    }


def demo(session: DemoSession) -> DemoOutcome:
    """Land two days of sample files (the second day's content has a new field) in the video
    landing zone, then run `video_daily` for each day: bronze, flattening, checks, silver, gold."""
    import os

    from dw_platform.defs.video.resources import video_landing_zone
    from dw_platform.devenv.demo import DemoOutcome, failure_reason

    zone = video_landing_zone().process_config_and_initialize()  # the zone the code location uses
    landing = zone.landing()
    # Daily partitions exist for complete days only: the two days before today.
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=2), today - timedelta(days=1)]
    for day in days:
        for name, data in sample_files(day, extra_field=day == days[-1]).items():
            landing.put(f"{day.isoformat()}/{name}", data)
    where = os.environ.get("DW_VIDEO_LANDING_DIR") or f"blob container {zone.container!r}"
    session.stage(
        f"video: landed users.csv, viewing_sessions.csv and content.json for {days[0]} and {days[1]} "
        f"in {where}; running video_daily for each day ..."
    )
    outcome = DemoOutcome(True)
    for day in days:
        result = session.run_job("video_daily", partition_key=day.isoformat())
        outcome.lines.append(
            f"video_daily {day}: {'SUCCESS' if result.success else 'FAILURE: ' + failure_reason(result)}"
        )
        outcome.ok = outcome.ok and result.success
        outcome.add_checks(result, str(day))
    return outcome
