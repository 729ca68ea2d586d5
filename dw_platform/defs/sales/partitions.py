import dagster as dg

# One partition per blob, named by its path under incoming/ (e.g. "2026-11-23/orders.csv").
# A changed file (same name, new etag) re-materializes its partition, replacing its rows.
sales_blobs = dg.DynamicPartitionsDefinition(name="sales_blobs")

INCOMING = "incoming/"
PROCESSED = "processed/"
FAILED = "failed/"
