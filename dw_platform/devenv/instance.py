"""The Dagster instance's storage, named in the project's dagster.yaml: dagster-postgres at
DAGSTER_PG_URL, or, when nothing is configured, on the embedded PostgreSQL.

`dw` sets DAGSTER_PG_URL before Dagster starts (the embedded default or `.env`), and so does a
production deployment. `dagster dev` or `dg dev` run in the project root of a fresh clone reads
dagster.yaml there with no settings at all (Dagster loads `.env` first, when there is one): with
neither DAGSTER_PG_URL nor DW_PG_HOST set, the instance starts the embedded PostgreSQL as `dw`
does (state under .dw/, every connection variable it fills in set for the processes Dagster
starts, stopped when the last process using it exits), so the UI, the daemon and the customer
domain's runs work there too. Only the PostgreSQL starts: `dw dev` also starts the blob emulator,
MariaDB and the replication source.
"""

from __future__ import annotations

import os

from dagster_postgres import DagsterPostgresStorage

from dw_platform.devenv import embedded


def postgres_url() -> str:
    if url := os.environ.get("DAGSTER_PG_URL"):
        return url
    if os.environ.get("DW_PG_HOST"):
        raise RuntimeError(
            "DAGSTER_PG_URL is not set: with DW_PG_HOST set (your own servers) the Dagster instance needs "
            "its database too, e.g. DAGSTER_PG_URL=postgresql+psycopg2://user:password@host:5432/dagster"
        )
    return embedded.start_postgres()


class PostgresStorage(DagsterPostgresStorage):
    """dagster-postgres storage whose URL is `postgres_url()` (no configuration in dagster.yaml)."""

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PostgresStorage:
        return cls(postgres_url=postgres_url(), inst_data=inst_data)
