"""`dw drop sales FILE`: the file goes to incoming/<today, UTC>/<its name> in the sales container,
where the sales sensor finds it."""

from datetime import datetime, timezone
from pathlib import Path

from dw_platform.defs.sales.partitions import INCOMING
from dw_platform.defs.sales.resources import sales_blob_storage


def drop(path: Path) -> str:
    storage = sales_blob_storage().process_config_and_initialize()  # settings from the environment
    storage.ensure_container()
    name = f"{INCOMING}{datetime.now(timezone.utc).date().isoformat()}/{path.name}"
    with path.open("rb") as data:
        storage.upload(name, data)
    return f"{storage.container}/{name}"
