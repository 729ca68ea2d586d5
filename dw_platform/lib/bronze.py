"""The bronze loader: rows stream into PostgreSQL with COPY, exactly once per partition.

One load = one transaction holding the partition's advisory locks: delete the rows the
partition owned before, COPY the new rows with lineage columns, advance the watermark and
write the batch-ledger entry. A crash leaves the previous state; a re-run replaces, never
duplicates. A failed load is recorded in the ledger in a transaction of its own.
"""

from __future__ import annotations

import io
import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str


LINEAGE_COLUMNS = (
    Column("_bronze_load_ts", "timestamptz"),
    Column("_bronze_batch_id", "uuid"),
    Column("_bronze_source_file", "text"),
)


@dataclass(frozen=True)
class BronzeTable:
    """A bronze landing table: the source's columns plus the lineage columns."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    index_columns: tuple[str, ...] = ()

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return self.columns + LINEAGE_COLUMNS

    @property
    def source_column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def table_schema(self) -> dg.TableSchema:
        return dg.TableSchema(columns=[dg.TableColumn(c.name, c.pg_type) for c in self.all_columns])


@dataclass(frozen=True)
class LoadScope:
    """The rows of a bronze table that one load owns: deleted, then loaded again.

    `partition_keys` are the Dagster partitions covered (one, or a range in a single-run
    backfill); each gets an advisory lock so two loads of one partition cannot interleave.
    """

    partition_keys: tuple[str, ...]
    where: sql.Composable
    params: Mapping[str, Any] = field(default_factory=dict)
    window_start: datetime | None = None
    window_end: datetime | None = None

    @classmethod
    def time_window(
        cls, partition_keys: Sequence[str], column: str, start: datetime, end: datetime
    ) -> LoadScope:
        where = sql.SQL("{col} >= %(window_start)s and {col} < %(window_end)s").format(
            col=sql.Identifier(column)
        )
        params = {"window_start": _naive_utc(start), "window_end": _naive_utc(end)}
        return cls(tuple(partition_keys), where, params, start, end)

    @property
    def label(self) -> str:
        keys = self.partition_keys
        return keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"


@dataclass(frozen=True)
class LoadResult:
    table: BronzeTable
    batch_id: uuid.UUID
    scope: LoadScope
    rows_loaded: int
    rows_replaced: int
    seconds: float
    watermark: datetime | None

    @property
    def rows_per_second(self) -> float:
        return self.rows_loaded / self.seconds if self.seconds > 0 else 0.0

    def metadata(self) -> dict[str, Any]:
        """Materialization metadata shown in the Dagster UI."""
        meta: dict[str, Any] = {
            "dagster/row_count": self.rows_loaded,
            "dagster/column_schema": self.table.table_schema(),
            "dagster/table_name": self.table.qualified_name,
            "batch_id": str(self.batch_id),
            "partitions": self.scope.label,
            "rows_replaced": self.rows_replaced,
            "duration_s": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_second),
        }
        if self.scope.window_start is not None:
            meta["window_start"] = self.scope.window_start.isoformat()
            meta["window_end"] = self.scope.window_end.isoformat()
        if self.watermark is not None:
            meta["watermark"] = self.watermark.isoformat()
        return meta


LEDGER_DDL = """
create schema if not exists bronze;
create table if not exists bronze.batch_ledger (
    batch_id       uuid primary key,
    asset_key      text not null,
    target_table   text not null,
    partition_key  text not null,
    source         text not null,
    window_start   timestamptz,
    window_end     timestamptz,
    rows_loaded    bigint not null default 0,
    rows_replaced  bigint not null default 0,
    status         text not null check (status in ('succeeded', 'failed')),
    error          text,
    dagster_run_id text,
    started_at     timestamptz not null,
    finished_at    timestamptz not null
);
create index if not exists batch_ledger_asset_partition
    on bronze.batch_ledger (asset_key, partition_key, finished_at);
create table if not exists bronze.etl_watermarks (
    watermark_key     text primary key,
    last_watermark_ts timestamp,
    last_run_ts       timestamptz not null,
    records_extracted bigint not null
);
"""


def ensure_bronze_objects(conn: psycopg.Connection, table: BronzeTable) -> None:
    """Create the ledger, the watermark table and `table` if missing.

    Checked first without DDL: even `create ... if not exists` takes table locks, which would
    deadlock against a load in progress. Creation itself is serialized (concurrent DDL races).
    """
    present = conn.execute(
        "select to_regclass('bronze.batch_ledger') is not null and to_regclass('bronze.etl_watermarks')"
        " is not null and to_regclass(%s) is not null",
        (table.ident.as_string(conn),),
    ).fetchone()[0]
    if present:
        return
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in table.all_columns
    )
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('dw_platform.bronze_ddl', 0))")
        conn.execute(LEDGER_DDL)
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(table.schema)))
        conn.execute(sql.SQL("create table if not exists {} ({})").format(table.ident, cols))
        for column in table.index_columns:
            conn.execute(
                sql.SQL("create index if not exists {} on {} ({})").format(
                    sql.Identifier(f"{table.name}_{column.strip('_')}_idx"),
                    table.ident,
                    sql.Identifier(column),
                )
            )


def load(
    conn: psycopg.Connection,
    table: BronzeTable,
    batches: Iterable[Sequence[Sequence[Any]]],
    *,
    asset_key: str,
    scope: LoadScope,
    source: str,
    watermark: tuple[str, str] | None = None,
    run_id: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    after_copy: Callable[[psycopg.Connection, uuid.UUID, datetime], None] | None = None,
) -> LoadResult:
    """Replace `scope` in `table` with the rows of `batches`, exactly once.

    `conn` must be in autocommit mode (each step opens its own transaction).
    `watermark` is (watermark_key, column): the key advances to the newest value loaded.
    `after_copy(conn, batch_id, load_ts)` runs inside the same transaction after the COPY, for
    side tables that must change together with the rows (e.g. a quarantine table).
    Raises `dg.Failure` with a one-line reason; nothing of a failed load is committed.
    """
    ensure_bronze_objects(conn, table)
    batch_id = uuid.uuid4()
    started_at = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    progress = _Progress()
    try:
        with conn.transaction():
            for key in sorted(scope.partition_keys):
                conn.execute(
                    "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{table.qualified_name}:{key}",),
                )
            replaced = conn.execute(
                sql.SQL("delete from {} where ").format(table.ident) + scope.where, scope.params
            ).rowcount
            _copy(conn, table, batches, (started_at, batch_id, source), progress, log)
            rows = progress.rows
            if after_copy is not None:
                after_copy(conn, batch_id, started_at)
            watermark_ts = _advance_watermark(conn, table, scope, watermark, rows) if watermark else None
            seconds = time.perf_counter() - t0
            _write_ledger(conn, batch_id, asset_key, table, scope, source, rows, replaced,
                          "succeeded", None, run_id, started_at)
    except Exception as exc:
        message = _describe(exc, table, scope, progress.rows)
        try:
            with conn.transaction():
                _write_ledger(conn, batch_id, asset_key, table, scope, source, 0, 0,
                              "failed", message, run_id, started_at)
        except psycopg.Error as ledger_exc:
            message += f" (the failure could not be written to the ledger either: {ledger_exc})"
        # Lost connections are worth a retry; bad data or a bad query fails the same way again.
        transient = isinstance(exc, psycopg.OperationalError) or getattr(exc, "transient", False)
        raise dg.Failure(description=message, metadata={"batch_id": str(batch_id)}, allow_retries=transient) from exc
    return LoadResult(table, batch_id, scope, rows, replaced, seconds, watermark_ts)


@dataclass
class _Progress:
    rows: int = 0
    next_report: int = 100_000


def _copy(conn, table: BronzeTable, batches, lineage: tuple, progress: _Progress, log) -> None:
    """COPY the batches: sequences of row tuples (binary COPY), or Arrow record batches whose
    columns are named as the table's (CSV COPY written by Arrow's C++ CSV writer, a batch at once)."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    batches = itertools.chain([first], batches)
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.all_columns)
    if hasattr(first, "num_rows"):
        statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(table.ident, columns)
        with conn.cursor().copy(statement) as copy:
            for batch in batches:
                copy.write(_arrow_csv(table, batch, lineage))
                progress.rows += batch.num_rows
                log_progress(progress, table, log)
        return
    statement = sql.SQL("copy {} ({}) from stdin (format binary)").format(table.ident, columns)
    with conn.cursor().copy(statement) as copy:
        copy.set_types([c.pg_type for c in table.all_columns])
        for batch in batches:
            for i, row in enumerate(batch):
                try:
                    copy.write_row((*row, *lineage))
                except (TypeError, AttributeError, ValueError, psycopg.DataError) as exc:
                    raise ValueError(f"row {progress.rows + i + 1:,}: {_type_mismatch(row, table.columns, exc)}") from exc
            progress.rows += len(batch)
            log_progress(progress, table, log)


def log_progress(progress: _Progress, table: BronzeTable, log) -> None:
    if progress.rows >= progress.next_report:
        log(f"{table.qualified_name}: {progress.rows:,} rows streamed")
        progress.next_report = (progress.rows // 100_000 + 1) * 100_000


def _arrow_csv(table: BronzeTable, batch, lineage: tuple) -> memoryview:
    """One Arrow batch plus the lineage columns as PostgreSQL CSV: strings are quoted (an empty
    string stays empty), nulls are not (NULL)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    missing = [c.name for c in table.columns if c.name not in batch.schema.names]
    if missing:
        raise ValueError(f"the batch lacks column(s) {', '.join(missing)} of {table.qualified_name}")
    n = batch.num_rows
    constants = [pa.array([str(value)] * n, pa.string()) for value in lineage]
    arrays = [batch.column(c.name) for c in table.columns] + constants
    out = io.BytesIO()
    pa_csv.write_csv(pa.RecordBatch.from_arrays(arrays, names=[c.name for c in table.all_columns]), out,
                     pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return out.getbuffer()


_PYTHON_TYPES = {
    "text": str, "integer": int, "bigint": int, "smallint": int, "boolean": bool, "date": date,
    "timestamp": datetime, "timestamptz": datetime, "uuid": uuid.UUID, "double precision": float,
    "numeric": (Decimal, int),
}


def _type_mismatch(row: Sequence[Any], columns: tuple[Column, ...], exc: Exception) -> str:
    """Name the first column whose value cannot be written as its declared type."""
    for value, column in zip(row, columns):
        expected = _PYTHON_TYPES.get(column.pg_type)
        if value is not None and expected is not None and not isinstance(value, expected):
            return f"column {column.name} ({column.pg_type}) got {type(value).__name__} {value!r:.60}"
    return str(exc)


def copy_side_rows(conn, table: BronzeTable, rows: Sequence[Sequence[Any]], batch_id: uuid.UUID,
                   load_ts: datetime, source: str) -> int:
    """COPY `rows` into a side table of a load (child rows, raw documents) with the load's lineage;
    for `after_copy` callbacks, inside the load's transaction. Returns the row count."""
    progress = _Progress()
    _copy(conn, table, [rows], (load_ts, batch_id, source), progress, lambda _msg: None)
    return progress.rows


def _advance_watermark(conn, table, scope: LoadScope, watermark: tuple[str, str], rows: int):
    key, column = watermark
    newest = conn.execute(
        sql.SQL("select max({}) from {} where ").format(sql.Identifier(column), table.ident) + scope.where,
        scope.params,
    ).fetchone()[0]
    conn.execute(
        """
        insert into bronze.etl_watermarks (watermark_key, last_watermark_ts, last_run_ts, records_extracted)
        values (%s, %s, now(), %s)
        on conflict (watermark_key) do update set
            last_watermark_ts = greatest(bronze.etl_watermarks.last_watermark_ts, excluded.last_watermark_ts),
            last_run_ts = excluded.last_run_ts,
            records_extracted = excluded.records_extracted
        """,
        (key, newest, rows),
    )
    return newest


def _write_ledger(conn, batch_id, asset_key, table, scope, source, rows, replaced, status, error,
                  run_id, started_at) -> None:
    conn.execute(
        """
        insert into bronze.batch_ledger (batch_id, asset_key, target_table, partition_key, source,
            window_start, window_end, rows_loaded, rows_replaced, status, error, dagster_run_id,
            started_at, finished_at)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
        """,
        (batch_id, asset_key, table.qualified_name, scope.label, source, scope.window_start,
         scope.window_end, rows, replaced, status, error, run_id, started_at),
    )


def _describe(exc: Exception, table: BronzeTable, scope: LoadScope, rows: int) -> str:
    where = f"loading {table.qualified_name} partition {scope.label}"
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        detail = exc.diag.message_primary
        if exc.diag.context:
            detail += f" ({exc.diag.context.strip()})"
        return f"{where} failed after {rows:,} rows: {detail}"
    return f"{where} failed after {rows:,} rows: {exc}"


def _naive_utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is None else ts.astimezone(timezone.utc).replace(tzinfo=None)
