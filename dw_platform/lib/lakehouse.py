"""The Apache Iceberg lakehouse: a pyiceberg SQL catalog kept in the warehouse PostgreSQL (schema
`lakehouse`) and table files under a warehouse path (a local folder by default, `.dw/lakehouse`;
any location pyiceberg can write in production: `s3://`, `abfs://`, `gs://`, ...).

pyiceberg is imported only when a catalog is opened: most of the code location never needs it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dw_platform.lib.warehouse import PostgresWarehouse

if TYPE_CHECKING:
    from pyiceberg.catalog.sql import SqlCatalog

CATALOG_SCHEMA = "lakehouse"
# Metadata files of small, often-written tables (status, schema changes) would pile up otherwise.
TIDY_METADATA = {"write.metadata.delete-after-commit.enabled": "true", "write.metadata.previous-versions-max": "20"}

_catalogs: dict[tuple[str, str], SqlCatalog] = {}
_catalogs_lock = threading.Lock()


class Lakehouse(PostgresWarehouse):
    """Where the Iceberg tables live: the catalog in this warehouse database (schema `lakehouse`),
    the files at `path`. `connect()` reaches the warehouse (locks, for instance)."""

    path: str
    catalog_name: str = "dw"

    def catalog(self) -> SqlCatalog:
        """The process's catalog for these settings (one SQLAlchemy engine, shared by threads)."""
        key = (self.sqlalchemy_url(), self.path)
        with _catalogs_lock:
            if key not in _catalogs:
                _catalogs[key] = _open_catalog(self, *key)
            return _catalogs[key]

    def sqlalchemy_url(self) -> str:
        """The catalog's SQLAlchemy URL (psycopg2: see DESIGN; search_path = the catalog schema)."""
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2",
            username=self.user,
            password=self.password or None,
            database=self.database,
            query={
                "host": self.host,
                "port": str(self.port),
                "sslmode": self.sslmode,
                "application_name": "dw_platform_lakehouse",
                "options": f"-csearch_path={CATALOG_SCHEMA}",
            },
        ).render_as_string(hide_password=False)


def lakehouse_from_env() -> Lakehouse:
    """The lakehouse from the DW_PG_* and DW_LAKEHOUSE_PATH settings, resolved now (for work outside
    a Dagster run: demos, benchmarks, tests)."""
    import os

    return Lakehouse(
        host=os.environ["DW_PG_HOST"],
        port=int(os.environ.get("DW_PG_PORT", "5432")),
        user=os.environ["DW_PG_USER"],
        password=os.environ.get("DW_PG_PASSWORD", ""),
        database=os.environ["DW_PG_DATABASE"],
        sslmode=os.environ.get("DW_PG_SSLMODE", "prefer"),
        path=os.environ["DW_LAKEHOUSE_PATH"],
    )


def _open_catalog(lakehouse: Lakehouse, url: str, path: str) -> SqlCatalog:
    from pyiceberg.catalog.sql import SqlCatalog

    with lakehouse.connect() as conn:
        present = conn.execute("select to_regclass(%s) is not null", (f"{CATALOG_SCHEMA}.iceberg_tables",)).fetchone()[
            0
        ]
        if present:
            return SqlCatalog(lakehouse.catalog_name, uri=url, warehouse=path)
        # The first use creates the schema and pyiceberg's two catalog tables; serialized, as
        # concurrent `create table` of the same name would fail one of the racers.
        conn.execute("select pg_advisory_lock(hashtextextended('dw_platform.lakehouse_catalog', 0))")
        try:
            conn.execute(f"create schema if not exists {CATALOG_SCHEMA}")
            return SqlCatalog(lakehouse.catalog_name, uri=url, warehouse=path)
        finally:
            conn.execute("select pg_advisory_unlock(hashtextextended('dw_platform.lakehouse_catalog', 0))")
