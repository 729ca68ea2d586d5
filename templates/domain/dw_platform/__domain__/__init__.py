"""The __domain__ domain's engine: its CSV contract (`schema.yaml`), its bronze and quarantine
tables (`ingest`) and `dw drop __domain__` (`drop`). No Dagster objects here: `defs/__domain__/`
defines them."""
