"""Operational databases over ODBC (pyodbc, in a child process): streaming reads and per-dialect identifier quoting."""

import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Literal

import dagster as dg

from dw_platform.lib.bronze import CopyData
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


def window_query(table: str, columns: Sequence[str], time_column: str, dialect: Dialect, history: bool = False) -> str:
    """SELECT the columns of rows whose `time_column` lies in [?, ?) — a half-open window; with
    `history`, of rows before ? and rows without a `time_column` (the read of a history load)."""
    cols = ", ".join(quote_ident(c, dialect) for c in columns)
    ts = quote_ident(time_column, dialect)
    where = f"{ts} < ? OR {ts} IS NULL" if history else f"{ts} >= ? AND {ts} < ?"
    return f"SELECT {cols} FROM {quote_table(table, dialect)} WHERE {where}"


class SourceError(RuntimeError):
    """The source could not be reached or queried; the message says which source and why."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class OdbcSource(dg.ConfigurableResource):
    """One operational database reached through an ODBC driver.

    `connection_string` is a secret (it carries the password): set it from the environment.
    Queries run in a child process (`dw_platform/lib/odbc_reader.py`), so a driver that crashes
    when its server goes away fails the load with a retryable error instead of killing the run.
    For PostgreSQL's psqlODBC add `UseDeclareFetch=1;Fetch=10000` so the driver streams
    instead of reading the whole result into memory.
    """

    connection_string: str
    dialect: Dialect = "mssql"
    fetch_size: int = 10_000
    login_timeout_s: int = 30
    name: str = "source"

    def stream(self, query: str, params: Sequence = ()) -> Iterator[list[tuple]]:
        """Yield the result in batches of `fetch_size` rows; the child fetches the next batches
        while the caller writes this one, so memory stays a few batches deep."""
        return prefetch(self._batches(query, list(params)))

    def copy_stream(self, query: str, params: Sequence, columns: Sequence[tuple[str, str]]) -> Iterator[CopyData]:
        """The result as binary COPY data for `columns` ((name, pg_type), the query's columns in
        order), encoded in the reader process: the caller's only work per batch is to pass it on."""
        return prefetch(self._batches(query, list(params), [tuple(c) for c in columns]))

    def arrow_stream(
        self,
        query: str,
        params: Sequence = (),
        page_rows: int | None = None,
        bound_query: str | None = None,
        read_ahead: int = 2,
    ) -> Iterator:
        """The result as Arrow record batches of up to `fetch_size` rows, fetched column-wise by
        arrow-odbc in the reader process (the driver's types: integers, decimal128 for decimals,
        timestamps); a bronze load turns them into COPY a whole column at a time.

        With `page_rows`, `query` is one keyset page: its first parameter is the key to continue
        after, its first column that key in ascending order, and it returns at most `page_rows`
        rows (a LIMIT). The reader runs it again after the last key it sent until a page comes
        back short: for drivers that hold a whole result in memory (MariaDB Connector/ODBC 3.1),
        memory stays one page deep, with one reader process and connection for every page.

        With `bound_query` (a query of one value), the reader first runs it on the same connection
        and appends the value to `params` as the read's upper bound; when it is not above the first
        parameter there is nothing to read. One process instead of a second one for the bound.

        `read_ahead`: batches fetched ahead of the caller (memory: that many batches)."""
        return prefetch(
            self._batches(query, list(params), arrow=True, page_rows=page_rows, bound_query=bound_query),
            depth=read_ahead,
        )

    def scalar(self, query: str, params: Sequence = ()):
        """The first column of the first row (None for no rows)."""
        for batch in self.stream(query, params):
            return batch[0][0] if batch else None
        return None

    def _batches(
        self,
        query: str,
        params: list,
        copy_columns: list | None = None,
        arrow: bool = False,
        page_rows: int | None = None,
        bound_query: str | None = None,
    ) -> Iterator:
        errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty driver cannot block the child
        child = subprocess.Popen(
            [sys.executable, "-m", "dw_platform.lib.odbc_reader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        finished = False
        try:
            pickle.dump(
                {
                    "connection_string": self.connection_string,
                    "query": query,
                    "params": params,
                    "fetch_size": self.fetch_size,
                    "login_timeout": self.login_timeout_s,
                    "copy_columns": copy_columns,
                    "arrow": arrow,
                    "page_rows": page_rows,
                    "bound_query": bound_query,
                },
                child.stdin,
            )
            child.stdin.close()
            while True:
                try:
                    frame = pickle.load(child.stdout)
                except (EOFError, pickle.UnpicklingError):  # the reader died, maybe halfway through a frame
                    raise self._crashed(child, errors) from None
                if frame[0] == "rows":
                    yield frame[1]
                elif frame[0] == "copy":
                    yield CopyData(frame[1], frame[2])
                elif frame[0] == "arrow":
                    yield _arrow_batch(frame[1])
                elif frame[0] == "end":
                    finished = True
                    if frame[1]:
                        yield CopyData(frame[1], 0)  # the COPY trailer
                    return
                elif frame[0] == "bad_row":
                    finished = True
                    raise ValueError(frame[1])  # bad data: not retried
                else:
                    _, message, transient, connecting = frame
                    finished = True
                    if connecting:
                        raise SourceError(f"cannot connect to {self.name} over ODBC: {message}", transient)
                    raise SourceError(f"query on {self.name} failed: {message}\n{query}", transient)
        finally:
            if not finished or child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
            errors.close()

    def _crashed(self, child: subprocess.Popen, errors) -> SourceError:
        code = child.wait()
        errors.seek(0)
        detail = errors.read().decode(errors="replace").strip().splitlines()[-3:]
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return SourceError(
            f"the ODBC reader of {self.name} died ({how}) before the end of the result; the driver usually "
            f"does this when the connection to the source is lost{': ' + ' | '.join(detail) if detail else ''}",
            transient=True,
        )


def _arrow_batch(ipc: bytes):
    import pyarrow as pa

    return pa.ipc.open_stream(ipc).read_next_batch()
