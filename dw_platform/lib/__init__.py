"""Shared building blocks every domain plugs into: resources, the bronze loader, checks, dbt wiring."""
