"""The SoftCart domain's engine: its web access logs into bronze and quarantine rows (`ingest`),
and `dw drop softcart` (`drop`). No Dagster objects here: `defs/softcart/` defines them."""
