"""dw_platform: a Dagster asset-graph medallion warehouse on PostgreSQL."""
