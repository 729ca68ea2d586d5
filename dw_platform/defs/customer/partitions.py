"""The customer domain's daily partitions: one per UTC day of the source's last_modified_ts.

The first day is configuration (`DW_CUSTOMER_START_DATE`, ISO date; default 2025-01-01): the day the
warehouse's daily history starts. Rows modified before it, and rows without a modification time,
are not dropped: the first partition's load reads them too (a history load, see assets.py).
"""

import os
from datetime import date

import dagster as dg

START_DATE = date.fromisoformat(os.environ.get("DW_CUSTOMER_START_DATE") or "2025-01-01")

customer_daily = dg.DailyPartitionsDefinition(start_date=START_DATE.isoformat(), timezone="UTC")
