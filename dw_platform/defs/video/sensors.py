"""Watch the video landing zone: a day whose three files have all arrived is one run of
`video_daily`, and is requested again whenever one of its files changes.

The cursor is JSON: {"requested": {day: fingerprint}}, the fingerprint built from the versions of
the day's three files (blob etags, or modification time and size in a local folder). The run key
is `<day>@<fingerprint>`: a replayed tick asks for the same run keys, which the instance skips, so
no version of a day runs twice; a re-delivered file (new version) runs the day again, replacing
it. A day is requested once its partition exists (the day has ended, UTC) and all three files are
there. Days whose files were all removed leave the cursor. An idle tick logs nothing.
"""

import hashlib
import json
from collections import defaultdict
from datetime import datetime

import dagster as dg

from dw_platform.defs.video.partitions import CONTENT_FILE, SESSIONS_FILE, USERS_FILE, video_daily
from dw_platform.lib.landing import LandedFile, Landing, LandingZone

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
    job_name="video_daily",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One run of video_daily per arrival day whose users, viewing sessions and content files have all "
    "landed, and again when one of them changes.",
)
def video_landing_sensor(context: dg.SensorEvaluationContext, video_landing: LandingZone) -> dg.SensorResult:
    return scan(context, video_landing.landing())


def scan(context: dg.SensorEvaluationContext, zone: Landing, now: datetime | None = None) -> dg.SensorResult:
    requested = load_cursor(context.cursor)
    days = set(video_daily.get_partition_keys(current_time=now))
    landed: dict[str, dict[str, LandedFile]] = defaultdict(dict)
    for file in zone.list():
        day, _, name = file.path.partition("/")
        if name in DAY_FILES:
            landed[day][name] = file
    requests = []
    for day, files in sorted(landed.items()):
        if day not in days or len(files) < len(DAY_FILES):
            continue
        version = fingerprint(files)
        if requested.get(day) != version:
            requests.append(dg.RunRequest(run_key=f"{day}@{version}", partition_key=day, tags={VERSION_TAG: version}))
            requested[day] = version
    if requests:
        context.log.info(f"{len(requests)} arrival day(s) to load: {', '.join(r.partition_key for r in requests)}")
    return dg.SensorResult(
        run_requests=requests, cursor=dump_cursor({d: v for d, v in requested.items() if d in landed})
    )
