import dagster as dg

# One partition per access-log file, named by its path under incoming/ (e.g. "2026-11-23/access.log").
weblog_files = dg.DynamicPartitionsDefinition(name="softcart_weblog_files")

INCOMING = "incoming/"
ARCHIVE = "archive/"


def archive_path(partition_key: str) -> str:
    """Where a file goes once its lines are committed: gzip-compressed under archive/."""
    return f"{ARCHIVE}{partition_key}.gz"
