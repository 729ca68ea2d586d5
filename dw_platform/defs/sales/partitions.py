import re
from urllib.parse import unquote

import dagster as dg

# One partition per blob, named by its path under incoming/ (e.g. "2026-11-23/orders.csv").
# A changed file (same name, new etag) re-materializes its partition, replacing its rows.
sales_blobs = dg.DynamicPartitionsDefinition(name="sales_blobs")

INCOMING = "incoming/"
PROCESSED = "processed/"
FAILED = "failed/"

# What Dagster refuses in a partition key ("...", control characters), and the escape character.
_ESCAPED = re.compile(r"%|[\x00-\x1f\x7f]|\.{3,}")


def partition_key(path: str) -> str:
    """The partition of the blob `incoming/<path>`: the path itself, with `%`, control characters
    and runs of three or more dots percent-escaped so that every blob name makes a valid key."""
    return _ESCAPED.sub(lambda m: "".join(f"%{ord(c):02X}" for c in m.group()), path)


def blob_path(key: str) -> str:
    """The blob's path under incoming/, processed/ or failed/ for a partition key."""
    return unquote(key)
