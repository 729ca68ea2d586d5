"""`dw drop __domain__ FILE`: the file becomes today's (UTC) __domain__.csv in the landing zone,
which the job `__domain___daily` loads once the day is over."""

from datetime import datetime, timezone
from pathlib import Path

from dw_platform.defs.__domain__.partitions import landed_path
from dw_platform.defs.__domain__.resources import landing_zone


def drop(path: Path) -> str:
    zone = landing_zone().process_config_and_initialize().landing()  # settings from the environment
    return zone.put(landed_path(datetime.now(timezone.utc).date().isoformat()), path.read_bytes()).uri
