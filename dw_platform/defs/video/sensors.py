"""Watch the video landing zone: a day whose three files have all arrived is one run of
`video_daily`, and is requested again whenever one of its files changes.

The cursor is JSON: {"requested": {day: fingerprint}}, the fingerprint built from the versions of
the day's three files (blob etags, or modification time and size in a local folder). The run key
is `<day>@<fingerprint>`: a replayed tick asks for the same run keys, which the instance skips, so
no version of a day runs twice; a re-delivered file (new version) runs the day again, replacing
it. A day is requested once its partition exists (the day has ended, UTC) and all three files are
there (each plain or compressed, `users.csv.gz`). Days whose files were all removed leave the
cursor. A day whose run ended without loading it (an outage outlasting the retries, a killed run)
is requested again as the sales sensor does (`dw_platform.lib.runs.stranded`; the latest
RETRY_DAYS days); a file that cannot
be loaded was moved to failed/, so its day waits for a new one. An idle tick logs nothing.
"""

import hashlib
import json
from collections import defaultdict
from datetime import datetime

import dagster as dg

from dw_platform.defs.video.partitions import CONTENT_FILE, FAILED, SESSIONS_FILE, USERS_FILE, video_daily
from dw_platform.lib.compression import plain_name
from dw_platform.lib.landing import LandedFile, Landing, LandingZone
from dw_platform.lib.runs import RETRY_AFTER_S, stranded

JOB = "video_daily"
RETRY_DAYS = 14  # days whose failed run is requested again
DAY_FILES = (USERS_FILE, SESSIONS_FILE, CONTENT_FILE)
VERSION_TAG = "dw/landed_version"


def fingerprint(files: dict[str, LandedFile]) -> str:
    return hashlib.sha256("\n".join(f"{name}={files[name].version}" for name in DAY_FILES).encode()).hexdigest()[:16]


def load_cursor(cursor: str | None) -> dict[str, str]:
    return dict(json.loads(cursor)["requested"]) if cursor else {}


def dump_cursor(requested: dict[str, str]) -> str:
    return json.dumps({"requested": requested}, sort_keys=True, separators=(",", ":"))


@dg.sensor(
    name="video_landing_sensor",
    job_name=JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One run of video_daily per arrival day whose users, viewing sessions and content files have all "
    "landed, and again when one of them changes.",
)
def video_landing_sensor(context: dg.SensorEvaluationContext, video_landing: LandingZone) -> dg.SensorResult:
    return scan(context, video_landing.landing())


def scan(
    context: dg.SensorEvaluationContext,
    zone: Landing,
    now: datetime | None = None,
    retry_after_s: float = RETRY_AFTER_S,
) -> dg.SensorResult:
    requested = load_cursor(context.cursor)
    days = set(video_daily.get_partition_keys(current_time=now))
    landed: dict[str, dict[str, LandedFile]] = defaultdict(dict)
    for file in zone.list():
        day, _, name = file.path.partition("/")
        if plain_name(name) in DAY_FILES and not file.path.startswith(FAILED):
            landed[day][plain_name(name)] = file
    requests = []
    current: dict[str, str] = {}
    for day, files in sorted(landed.items()):
        if day not in days or len(files) < len(DAY_FILES):
            continue
        version = current[day] = fingerprint(files)
        if requested.get(day) != version:
            requests.append(dg.RunRequest(run_key=f"{day}@{version}", partition_key=day, tags={VERSION_TAG: version}))
            requested[day] = version
    # The files of a day stay where they landed: only the latest days' runs are looked at again.
    again = {r.partition_key for r in requests}
    recent = sorted(day for day, v in requested.items() if current.get(day) == v and day not in again)[-RETRY_DAYS:]
    waiting = {day: requested[day] for day in recent}
    if waiting:
        requests += stranded(
            context.instance, JOB, waiting, VERSION_TAG, lambda d, v: current.get(d) == v, len(waiting), retry_after_s
        )
    if requests:
        context.log.info(f"{len(requests)} arrival day(s) to load: {', '.join(r.partition_key for r in requests)}")
    return dg.SensorResult(
        run_requests=requests, cursor=dump_cursor({d: v for d, v in requested.items() if d in landed})
    )
