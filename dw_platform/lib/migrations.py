"""Versioned migrations of the warehouse: every change of a table's shape, applied once.

The files `dw_platform/migrations/NNNN_<what it does>.sql` are the warehouse's history. `migrate`
applies those a warehouse has not recorded in `bronze.schema_migrations` (id = the number, name,
applied_at) in the order of their numbers, each in one transaction with its record, under the
advisory lock bronze DDL takes: concurrent loads starting on a fresh or upgraded warehouse apply
each exactly once (the others wait and find it done), and a failed migration leaves nothing of
itself behind and is named in the error. It runs before every bronze load
(`bronze.ensure_bronze_objects`), every dbt build and wherever a table a migration makes is read
first; once a warehouse has them all it costs two catalog queries and takes no lock.

A migration is never edited once merged: a later change is a new file with the next number. The
first ones also adopt warehouses made before migrations existed (`if not exists`, `add column if
not exists`: what is there stays as it is). Tables whose shape is declared in code (a
`BronzeTable`) are created as declared by their first load; a migration changing one acts only if
it exists.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from dw_platform.lib.bronze_partitions import DDL_LOCK

FOLDER = Path(__file__).resolve().parents[1] / "migrations"
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
RECORD_DDL = """
create schema if not exists bronze;
create table if not exists bronze.schema_migrations (
    id          integer primary key,
    name        text not null,
    applied_at  timestamptz not null default now()
);
comment on table bronze.schema_migrations is
    'the migrations (dw_platform/migrations/NNNN_name.sql) applied to this warehouse, each once';
"""


@dataclass(frozen=True)
class Migration:
    id: int
    name: str
    path: Path

    @property
    def statements(self) -> str:
        return self.path.read_text()


class MigrationError(RuntimeError):
    """A migration failed: nothing of it was committed. `transient`: the connection was lost
    (worth a retry), rather than the migration being wrong for this warehouse."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


@functools.cache
def available(folder: Path = FOLDER) -> tuple[Migration, ...]:
    """The migrations in `folder`, in order. Raises ValueError on a misnamed file or a number used twice."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")) or path.name == "README.md":
            continue
        match = _FILE.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path}: a migration is named NNNN_<what_it_does>.sql")
        found.append(Migration(int(match[1]), match[2], path))
    ids = [m.id for m in found]
    if len(set(ids)) != len(ids):
        twice = sorted({m.path.name for m in found if ids.count(m.id) > 1})
        raise ValueError(f"migrations share a number: {', '.join(twice)}; renumber the newer one")
    return tuple(found)


def applied(conn: psycopg.Connection) -> set[int]:
    """The ids of the migrations the warehouse has recorded."""
    if not conn.execute("select to_regclass('bronze.schema_migrations') is not null").fetchone()[0]:
        return set()
    return {row[0] for row in conn.execute("select id from bronze.schema_migrations")}


def migrate(conn: psycopg.Connection, migrations: tuple[Migration, ...] | None = None) -> list[Migration]:
    """Apply the migrations the warehouse lacks (all of `available()` unless given); returns those
    this call applied. `conn` must not be inside a transaction that has written anything."""
    migrations = available() if migrations is None else migrations
    if {m.id for m in migrations} <= applied(conn):
        return []
    done = []
    for migration in migrations:
        try:
            with conn.transaction():
                conn.execute(DDL_LOCK)
                conn.execute(RECORD_DDL)
                if conn.execute(
                    "select exists (select from bronze.schema_migrations where id = %s)", (migration.id,)
                ).fetchone()[0]:
                    continue  # applied meanwhile by another session
                conn.execute(migration.statements)
                conn.execute(
                    "insert into bronze.schema_migrations (id, name) values (%s, %s)", (migration.id, migration.name)
                )
        except psycopg.Error as exc:
            raise MigrationError(
                f"migration {migration.path.name} failed, nothing of it was applied: {str(exc).strip()}",
                transient=isinstance(exc, psycopg.OperationalError),
            ) from exc
        done.append(migration)
    return done
