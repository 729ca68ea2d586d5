"""`dw drop video FILE`: the file (users.csv, viewing_sessions.csv or content.json) arrives today:
<today, UTC>/<its name> in the video landing zone, which the job `video_daily` loads for that day."""

from datetime import datetime, timezone
from pathlib import Path

from dw_platform.defs.video.partitions import landed_path
from dw_platform.defs.video.resources import video_landing_zone
from dw_platform.lib.landing import file_chunks


def drop(path: Path) -> str:
    zone = video_landing_zone().process_config_and_initialize().landing()  # settings from the environment
    landed = zone.put(landed_path(datetime.now(timezone.utc).date().isoformat(), path.name), file_chunks(path))
    return landed.uri
