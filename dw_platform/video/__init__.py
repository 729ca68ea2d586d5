"""The video domain's engine: its CSV files (under `users.yaml`, `viewing_sessions.yaml`) and
content JSON into bronze and quarantine rows (`ingest`), and `dw drop video` (`drop`). No Dagster
objects here: `defs/video/` defines them."""
