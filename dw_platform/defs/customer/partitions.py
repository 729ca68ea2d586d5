import dagster as dg

# One partition per UTC day of the source's last_modified_ts.
customer_daily = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")
