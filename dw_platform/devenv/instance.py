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

Its connections are pooled (`PostgresStorage`): dagster-postgres opens a new connection for every
statement outside the webserver (~400 per one-file run, 7-8 ms each with password
authentication here: ~3 s of the run's process and as much of the server's CPU).
"""

from __future__ import annotations

import os

import sqlalchemy
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage, PostgresRunStorage

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


class _HeldConnection:
    """A dagster-postgres storage holding one connection open for the process's next statement
    instead of connecting for each (more at once when threads need them; those are closed after
    use, as before). A held connection is checked before use, so a restarted server costs a
    reconnect, not a failed statement; it closes when the instance is disposed. The webserver
    still replaces the engine with its own pool (`optimize_for_webserver`)."""

    def __init__(self, postgres_url: str):
        super().__init__(postgres_url)
        # dagster-postgres makes its engine with NullPool and offers no setting for it.
        self._engine = sqlalchemy.create_engine(
            postgres_url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=-1, pool_pre_ping=True
        )

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()


class _RunStorage(_HeldConnection, PostgresRunStorage):
    pass


class _EventLogStorage(_HeldConnection, PostgresEventLogStorage):
    pass


class PostgresStorage(DagsterPostgresStorage):
    """dagster-postgres storage whose URL is `postgres_url()` (no configuration in dagster.yaml),
    its run and event log storages each holding a connection (`_HeldConnection`): the statements of
    a run. The schedule storage (sensor and schedule state, written by the daemon) connects per
    statement as before: a sensor evaluation's instance is not always disposed."""

    def __init__(self, postgres_url: str, inst_data=None):
        super().__init__(postgres_url=postgres_url, inst_data=inst_data)
        self._held_runs = _RunStorage(postgres_url)
        self._held_events = _EventLogStorage(postgres_url)

    @property
    def run_storage(self) -> PostgresRunStorage:
        return self._held_runs

    @property
    def event_log_storage(self) -> PostgresEventLogStorage:
        return self._held_events

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PostgresStorage:
        return cls(postgres_url=postgres_url(), inst_data=inst_data)
