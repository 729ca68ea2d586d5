"""The __domain__ domain's partitions: one per UTC day a file arrived, <YYYY-MM-DD>/__domain__.csv."""

import dagster as dg

DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")
FILE_NAME = "__domain__.csv"


def landed_path(partition_key: str) -> str:
    return f"{partition_key}/{FILE_NAME}"
