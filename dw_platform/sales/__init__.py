"""The sales domain's engine: a sales CSV blob into bronze and quarantine rows under `schema.yaml`
(`ingest`), the re-encryption of its sensitive values under a new key (`rotation`, `dw rotate-keys
sales`) and `dw drop sales` (`drop`). No Dagster objects here: `defs/sales/` defines them."""
