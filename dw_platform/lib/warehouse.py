"""The PostgreSQL warehouse (bronze, silver, gold schemas) as a Dagster resource."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from psycopg.conninfo import make_conninfo


class PostgresWarehouse(dg.ConfigurableResource):
    """Connection settings for the warehouse; `host` may be a unix-socket directory."""

    host: str
    port: int = 5432
    user: str
    password: str = ""
    database: str
    sslmode: str = "prefer"

    def conninfo(self) -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
            dbname=self.database,
            sslmode=self.sslmode,
            application_name="dw_platform",
        )

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """An autocommit connection: callers group statements with `conn.transaction()`.
        Not reaching the warehouse fails the step with the reason; retried unless it is a matter
        of configuration or credentials."""
        try:
            conn = psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=30)
        except psycopg.OperationalError as exc:
            from dw_platform.lib.bronze import is_transient

            raise dg.Failure(
                f"cannot connect to the warehouse {self.database!r} on {self.host}: {str(exc).strip().splitlines()[0]}",
                allow_retries=is_transient(exc),
            ) from exc
        with conn:
            yield conn


def server_connection(dbname: str) -> psycopg.Connection:
    """An autocommit connection to any database on the warehouse's server, from the DW_PG_* settings
    (for set-up work outside Dagster: creating databases, seeding samples, summaries)."""
    return psycopg.connect(
        host=os.environ["DW_PG_HOST"],
        port=os.environ.get("DW_PG_PORT", "5432"),
        user=os.environ["DW_PG_USER"],
        password=os.environ.get("DW_PG_PASSWORD") or None,
        dbname=dbname,
        sslmode=os.environ.get("DW_PG_SSLMODE", "prefer"),
        autocommit=True,
    )


def warehouse_settings() -> dict:
    """PostgresWarehouse fields from the DW_PG_* settings (the password through dg.EnvVar)."""
    return dict(
        host=dg.EnvVar("DW_PG_HOST"),
        port=int(os.environ.get("DW_PG_PORT", "5432")),
        user=dg.EnvVar("DW_PG_USER"),
        password=dg.EnvVar("DW_PG_PASSWORD"),
        database=dg.EnvVar("DW_PG_DATABASE"),
        sslmode=os.environ.get("DW_PG_SSLMODE", "prefer"),
    )
