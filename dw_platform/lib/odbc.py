"""Operational databases over ODBC (pyodbc): streaming reads and per-dialect identifier quoting."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import dagster as dg
import pyodbc

from dw_platform.lib.prefetch import prefetch

Dialect = Literal["mssql", "mysql", "postgresql", "db2", "oracle"]


def quote_ident(name: str, dialect: Dialect) -> str:
    """Quote one identifier the way `dialect` expects, doubling any embedded closing quote."""
    if not name:
        raise ValueError("empty identifier")
    if dialect == "mssql":
        return "[" + name.replace("]", "]]") + "]"
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    if dialect in ("postgresql", "db2", "oracle"):
        return '"' + name.replace('"', '""') + '"'
    raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of mssql, mysql, postgresql, db2, oracle")


def quote_table(qualified_name: str, dialect: Dialect) -> str:
    """Quote `schema.table` (or `table`) part by part."""
    return ".".join(quote_ident(part, dialect) for part in qualified_name.split("."))


def window_query(table: str, columns: Sequence[str], time_column: str, dialect: Dialect) -> str:
    """SELECT the columns of rows whose `time_column` lies in [?, ?) — a half-open window."""
    cols = ", ".join(quote_ident(c, dialect) for c in columns)
    ts = quote_ident(time_column, dialect)
    return f"SELECT {cols} FROM {quote_table(table, dialect)} WHERE {ts} >= ? AND {ts} < ?"


class SourceError(RuntimeError):
    """The source could not be reached or queried; the message says which source and why."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class OdbcSource(dg.ConfigurableResource):
    """One operational database reached through an ODBC driver.

    `connection_string` is a secret (it carries the password): set it from the environment.
    For PostgreSQL's psqlODBC add `UseDeclareFetch=1;Fetch=10000` so the driver streams
    instead of reading the whole result into memory.
    """

    connection_string: str
    dialect: Dialect = "mssql"
    fetch_size: int = 10_000
    name: str = "source"

    @contextmanager
    def connect(self) -> Iterator[pyodbc.Connection]:
        try:
            conn = pyodbc.connect(self.connection_string, autocommit=True, timeout=30)
        except pyodbc.Error as exc:
            raise SourceError(f"cannot connect to {self.name} over ODBC: {_odbc_message(exc)}", True) from exc
        try:
            yield conn
        finally:
            conn.close()

    def stream(self, query: str, params: Sequence) -> Iterator[list[pyodbc.Row]]:
        """Yield the result in batches of `fetch_size` rows, fetching the next batches while
        the caller writes this one; memory stays a few batches deep."""
        return prefetch(self._batches(query, params))

    def _batches(self, query: str, params: Sequence) -> Iterator[list[pyodbc.Row]]:
        with self.connect() as conn:
            cursor = conn.cursor()
            try:
                cursor.execute(query, *params)
            except pyodbc.Error as exc:
                raise SourceError(
                    f"query on {self.name} failed: {_odbc_message(exc)}\n{query}",
                    isinstance(exc, pyodbc.OperationalError),
                ) from exc
            while batch := cursor.fetchmany(self.fetch_size):
                yield batch

    def scalar(self, query: str, params: Sequence = ()):
        with self.connect() as conn:
            try:
                return conn.cursor().execute(query, *params).fetchval()
            except pyodbc.Error as exc:
                raise SourceError(
                    f"query on {self.name} failed: {_odbc_message(exc)}\n{query}",
                    isinstance(exc, pyodbc.OperationalError),
                ) from exc


def _odbc_message(exc: pyodbc.Error) -> str:
    return " ".join(str(a) for a in exc.args[1:]) or str(exc)
