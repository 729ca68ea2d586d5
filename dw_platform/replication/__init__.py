"""The replication engine: discover and extract source tables (PostgreSQL, Oracle), bulk-load them
into Iceberg at one consistent position, capture changes from a pgoutput slot into a durable event
log and apply them to the lakehouse. No Dagster here: `defs/replication/` wraps it in assets,
checks, jobs and sensors."""
