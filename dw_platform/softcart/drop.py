"""`dw drop softcart FILE`: an access log goes to incoming/<its name> in the weblogs landing zone,
where the weblogs sensor finds it."""

from pathlib import Path

from dw_platform.defs.softcart.partitions import INCOMING
from dw_platform.defs.softcart.resources import weblogs_landing_zone
from dw_platform.lib.landing import file_chunks


def drop(path: Path) -> str:
    zone = weblogs_landing_zone().process_config_and_initialize().landing()  # settings from the environment
    return zone.put(INCOMING + path.name, file_chunks(path)).uri
