"""Run one ODBC query in a child process and stream its rows back over a pipe.

Why a process: an ODBC driver that loses its server can take the whole process down (psqlODBC
segfaults inside `fetchmany` when the server dies mid-read). In a child, that crash becomes a
clear, retryable error of the load — with a failure event and a ledger entry — instead of a
run that vanishes. It also lets the fetch use the second core while the parent writes COPY.

Protocol: the parent writes one pickled request to stdin (the connection string travels there,
never on the command line); the child answers with pickled frames on stdout, one per batch:
("rows", [tuple, ...]), or — when the request names the PostgreSQL types of the columns —
("copy", bytes, row count) holding the batch already in PostgreSQL's binary COPY format, which
the parent passes to COPY untouched (no per-row work on its side); or — when the request asks
for Arrow — ("arrow", bytes, row count) holding an Arrow IPC stream of one record batch, fetched
column-wise by arrow-odbc (ODBC bulk fetch into Arrow buffers: no Python object per value); then
("end", bytes) with the COPY trailer, or ("error", message, transient, connecting), or
("bad_row", message).
This module imports only the driver binding it uses (pyodbc and psycopg, or arrow-odbc and
pyarrow), so the child starts fast.
"""

from __future__ import annotations

import pickle
import re
import sys
from typing import Any, BinaryIO

from dw_platform.lib.pgtypes import COPY_SIGNATURE, COPY_TRAILER, describe_mismatch

# Messages that mean the server or the network went away (the read may succeed on a retry),
# as psqlODBC, MariaDB Connector/ODBC and Microsoft's driver word them.
LOST_CONNECTION = (
    "server closed the connection",
    "terminating connection",
    "could not receive data",
    "connection refused",
    "could not connect",
    "no such file or directory",
    "lost connection",
    "server has gone away",
    "communication link failure",
    "connection reset",
    "broken pipe",
    "timeout expired",
    "timed out",
    "the connection is broken",
    "connection was forcibly closed",
    "can't connect",
)
# Connection failures that a retry cannot fix: configuration and authentication.
PERMANENT_CONNECT = (
    "password",
    "authentication",
    "does not exist",
    "pg_hba",
    "permission denied",
    "login failed",
    "access denied",
    "unknown database",
)


def is_transient(sqlstate: str, message: str, connecting: bool) -> bool:
    """Transient = the server could not be reached, or the connection was lost or timed out.
    Permanent = an unknown driver or DSN, bad credentials, a missing database, bad SQL, bad data."""
    text = message.lower()
    if (
        sqlstate.startswith("IM")
        or sqlstate.startswith("28")
        or sqlstate.startswith("42")
        or sqlstate.startswith("22")
        or sqlstate.startswith("23")
    ):
        return False
    if connecting and any(word in text for word in PERMANENT_CONNECT):
        return False
    if sqlstate.startswith("08") or sqlstate in ("HYT00", "HYT01"):
        return True
    return any(phrase in text for phrase in LOST_CONNECTION)


def _send(out: BinaryIO, frame: tuple) -> None:
    pickle.dump(frame, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()


def serve(request: dict[str, Any], out: BinaryIO) -> None:
    if request.get("arrow"):
        serve_arrow(request, out)
        return
    import pyodbc

    def error(exc: pyodbc.Error, connecting: bool) -> tuple:
        state = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
        message = " ".join(str(a) for a in exc.args[1:]) or str(exc)
        return ("error", message, is_transient(state, message, connecting), connecting)

    try:
        conn = pyodbc.connect(request["connection_string"], autocommit=True, timeout=request["login_timeout"])
    except pyodbc.Error as exc:
        _send(out, error(exc, connecting=True))
        return
    try:
        cursor = conn.cursor()
        cursor.execute(request["query"], *request["params"])
        encode = _copy_encoder(request["copy_columns"]) if request.get("copy_columns") else None
        read = 0
        while batch := cursor.fetchmany(request["fetch_size"]):
            if encode is None:
                _send(out, ("rows", [tuple(row) for row in batch]))
            else:
                try:
                    _send(out, ("copy", encode(batch, first=read == 0), len(batch)))
                except _BadRow as bad:
                    _send(out, ("bad_row", f"row {read + bad.index + 1:,}: {bad}"))
                    return
            read += len(batch)
        _send(out, ("end", (b"" if read else COPY_SIGNATURE) + COPY_TRAILER if encode else b""))
    except pyodbc.Error as exc:
        _send(out, error(exc, connecting=False))
    finally:
        conn.close()


def serve_arrow(request: dict[str, Any], out: BinaryIO) -> None:
    """The query's result as Arrow record batches (arrow-odbc). Its parameters travel as text;
    the driver converts them to the columns' types. With `page_rows`, the query is a keyset page
    (see `OdbcSource.arrow_stream`): it runs again after the last key sent until a page is short.
    With `bound_query`, its value (read first, on the same connection) is the read's upper bound,
    appended to the parameters; no bound above the first parameter means nothing to read."""
    import arrow_odbc
    import pyarrow as pa

    def error(exc: arrow_odbc.Error, connecting: bool) -> tuple:
        text = str(exc)
        state = re.search(r"State: (\w{5})", text)
        message = text.split("Message: ", 1)[-1]
        return ("error", message, is_transient(state.group(1) if state else "", message, connecting), connecting)

    try:
        conn = arrow_odbc.connect(request["connection_string"], login_timeout_sec=request["login_timeout"])
    except arrow_odbc.Error as exc:
        _send(out, error(exc, connecting=True))
        return
    params, page_rows = list(request["params"]), request.get("page_rows")
    try:
        if request.get("bound_query"):
            bound = next(iter(conn.read_arrow_batches(request["bound_query"], batch_size=1)), None)
            bound = bound.column(0)[0].as_py() if bound is not None and bound.num_rows else None
            if bound is None or bound <= params[0]:
                _send(out, ("end", b""))
                return
            params.append(bound)
        while True:
            rows = 0
            for batch in conn.read_arrow_batches(
                request["query"],
                batch_size=request["fetch_size"],
                parameters=[None if p is None else str(p) for p in params],
            ):
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, batch.schema) as writer:
                    writer.write_batch(batch)
                _send(out, ("arrow", sink.getvalue().to_pybytes(), batch.num_rows))
                if batch.num_rows:
                    rows += batch.num_rows
                    params[0] = batch.column(0)[-1].as_py()
            if not page_rows or rows < page_rows:
                break
        _send(out, ("end", b""))
    except arrow_odbc.Error as exc:
        _send(out, error(exc, connecting=False))


class _BadRow(ValueError):
    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


def _copy_encoder(columns: list[tuple[str, str]]):
    """Rows -> PostgreSQL binary COPY data for `columns` (name, pg_type), with psycopg's own (C)
    dumpers. psycopg formats COPY rows only through a connection's cursor; its row formatter is
    used directly so the child needs no warehouse connection (pinned by psycopg>=3.2,<4)."""
    import psycopg
    from psycopg import adapt
    from psycopg._copy_base import format_row_binary

    transformer = adapt.Transformer()
    transformer.set_dumper_types([psycopg.adapters.types.get_oid(t) for _, t in columns], psycopg.pq.Format.BINARY)

    def encode(batch, first: bool) -> bytes:
        buffer = bytearray(COPY_SIGNATURE if first else b"")
        for index, row in enumerate(batch):
            try:
                format_row_binary(row, transformer, buffer)
            except (TypeError, ValueError, AttributeError, psycopg.DataError) as exc:
                raise _BadRow(describe_mismatch(row, columns, exc), index) from exc
        return bytes(buffer)

    return encode


def main() -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    serve(pickle.load(sys.stdin.buffer), out)


if __name__ == "__main__":
    main()
