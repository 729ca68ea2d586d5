import dagster as dg

from dw_platform.lib.compression import claimed

# One partition per access-log file, named by its path under incoming/ (e.g. "2026-11-23/access.log").
weblog_files = dg.DynamicPartitionsDefinition(name="softcart_weblog_files")

INCOMING = "incoming/"
ARCHIVE = "archive/"
FAILED = "failed/"


def archive_path(partition_key: str) -> str:
    """Where a file goes once its lines are committed: under archive/, gzip-compressed (a file
    that arrived compressed, such as logrotate's `access.log.1.gz`, keeps its own bytes and name)."""
    return f"{ARCHIVE}{partition_key}" if claimed(partition_key) else f"{ARCHIVE}{partition_key}.gz"


def failed_path(partition_key: str) -> str:
    """Where a file that cannot be loaded goes, as it arrived, with its report beside it."""
    return f"{FAILED}{partition_key}"


def report_path(partition_key: str) -> str:
    return f"{FAILED}{partition_key}.report.json"
