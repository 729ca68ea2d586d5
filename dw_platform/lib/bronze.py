"""The bronze loader: rows stream into PostgreSQL with COPY, exactly once per partition.

A load is recorded in the batch ledger as `running` first (its own small transaction), then one
transaction holding the partition's advisory locks writes the rows, the side tables
(`after_copy`), the watermark and closes the ledger entry as `succeeded`. A crash leaves the rows
as they were and the ledger entry `running` until a later load sees that its database session
is gone and marks it `abandoned`; any other failure closes it as `failed` with the reason, on a
fresh connection (the load's own may be the thing that broke).

Three ways a load treats what bronze already holds, chosen by the table:
- replace (the default): the rows the scope owned are deleted and the new rows copied in — for
  sources whose unit is immutable (a blob version, a day's file);
- keep versions (`BronzeTable.version_key`): nothing is deleted; the rows are staged, and only
  versions bronze does not hold yet are appended. A version is identified by its business key +
  modification time + a hash of every source column (`_bronze_row_hash`, unique), so a re-run or a
  backfill adds what is new and never drops or duplicates a version captured earlier;
- append by key (`BronzeTable.append_key`): for immutable source rows with an increasing key (an
  auto-increment rowid), read strictly above bronze's highest key under the partition's lock.
  Nothing is deleted or staged: the rows are copied straight into the table, whose unique index
  on the key rejects — and so fails the whole load — a key loaded before.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat

from dw_platform.lib import migrations
from dw_platform.lib.pgtypes import COPY_SIGNATURE, COPY_TRAILER, describe_mismatch


@dataclass(frozen=True)
class CopyData:
    """A batch already in PostgreSQL's binary COPY format (source columns only, in table order),
    as the ODBC reader process sends it: written to COPY as it is. Only for version-keeping tables,
    whose loads stage the source columns and add the lineage when appending."""

    data: bytes
    rows: int


@dataclass(frozen=True)
class CopyText:
    """A batch already in PostgreSQL's COPY text format: the source columns of `rows` rows,
    tab-separated and escaped, each line ending in a newline (for producers that format rows
    themselves, such as a log parser). The loader appends the lineage to every line with one
    string replace per batch, so nothing is done per row on its side. A load's batches are all
    CopyText or none."""

    data: str
    rows: int


Batches = Iterable[Sequence[Sequence[Any]] | CopyData | CopyText]
# Rows, or a function that returns them given the load's connection once the partition's locks
# are held (for sources whose read depends on what bronze holds, such as "rowid > the highest
# loaded"). It must not use the connection once it starts yielding.
RowSource = Batches | Callable[[psycopg.Connection], Batches]


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str


LINEAGE_COLUMNS = (
    Column("_bronze_load_ts", "timestamptz"),
    Column("_bronze_batch_id", "uuid"),
    Column("_bronze_source_file", "text"),
)
ROW_HASH = Column("_bronze_row_hash", "text")


@dataclass(frozen=True)
class BronzeTable:
    """A bronze landing table: the source's columns plus the lineage columns.

    `version_key` (business key + modification time) makes the table keep versions: loads append
    only versions not yet present, identified by `_bronze_row_hash` (md5 of every source column).
    `append_key` (an integer column, unique in bronze) makes loads append every row they read,
    which must lie above the highest key bronze held when the load took its lock.
    """

    schema: str
    name: str
    columns: tuple[Column, ...]
    index_columns: tuple[str, ...] = ()
    version_key: tuple[str, ...] = ()
    append_key: str | None = None

    def __post_init__(self):
        if self.version_key and self.append_key:
            raise ValueError(f"{self.qualified_name}: a table keeps versions or appends by key, not both")

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def keeps_versions(self) -> bool:
        return bool(self.version_key)

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return self.columns + LINEAGE_COLUMNS + ((ROW_HASH,) if self.keeps_versions else ())

    @property
    def source_column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def table_schema(self) -> dg.TableSchema:
        return dg.TableSchema(columns=[dg.TableColumn(c.name, c.pg_type) for c in self.all_columns])


@dataclass(frozen=True)
class LoadScope:
    """The rows of a bronze table that one load owns, and what it reads from the source.

    `partition_keys` are the Dagster partitions covered (one, or a range in a single-run
    backfill); each gets an advisory lock so two loads of one partition cannot interleave.
    `where` selects the partition's rows in bronze (replaced by a replacing load; counted by
    checks). `read_start`/`read_end` is the source window really read: the partition window,
    widened back by a lookback for late-arriving rows.
    """

    partition_keys: tuple[str, ...]
    where: sql.Composable
    params: Mapping[str, Any] = field(default_factory=dict)
    window_start: datetime | None = None
    window_end: datetime | None = None
    read_start: datetime | None = None
    read_end: datetime | None = None

    @classmethod
    def time_window(
        cls,
        partition_keys: Sequence[str],
        column: str,
        start: datetime,
        end: datetime,
        lookback: timedelta = timedelta(0),
    ) -> LoadScope:
        where = sql.SQL("{col} >= %(window_start)s and {col} < %(window_end)s").format(col=sql.Identifier(column))
        params = {"window_start": _naive_utc(start), "window_end": _naive_utc(end)}
        return cls(tuple(partition_keys), where, params, start, end, start - lookback, end)

    @property
    def label(self) -> str:
        keys = self.partition_keys
        return keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"

    @property
    def read_params(self) -> tuple[datetime, datetime]:
        """The read window as naive UTC timestamps, for a source query's parameters."""
        return _naive_utc(self.read_start), _naive_utc(self.read_end)


@dataclass(frozen=True)
class Watermark:
    """Where an incremental source stands: `key` in bronze.etl_watermarks advances to the newest
    `column` value read. A timestamp column is kept in `last_watermark_ts`, an integer one (a
    rowid) in `last_watermark_id`."""

    key: str
    column: str


@dataclass(frozen=True)
class LoadResult:
    table: BronzeTable
    batch_id: uuid.UUID
    scope: LoadScope
    rows_read: int
    rows_loaded: int
    rows_replaced: int
    seconds: float
    watermark: datetime | int | None

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    @property
    def summary(self) -> str:
        """One log line: what was read, added and replaced, and how fast."""
        kept = f", {self.rows_read - self.rows_loaded:,} already in bronze" if self.table.keeps_versions else ""
        replaced = f", replaced {self.rows_replaced:,}" if self.rows_replaced else ""
        return (
            f"read {self.rows_read:,} rows, loaded {self.rows_loaded:,}{kept}{replaced} in {self.seconds:.1f}s "
            f"({self.rows_per_second:,.0f} rows/s), batch {self.batch_id}"
        )

    def metadata(self) -> dict[str, Any]:
        """Materialization metadata shown in the Dagster UI."""
        meta: dict[str, Any] = {
            "dagster/row_count": self.rows_loaded,
            "dagster/column_schema": self.table.table_schema(),
            "dagster/table_name": self.table.qualified_name,
            "batch_id": str(self.batch_id),
            "partitions": self.scope.label,
            "rows_read": self.rows_read,
            "rows_replaced": self.rows_replaced,
            "duration_s": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_second),
        }
        if self.scope.window_start is not None:
            meta["window_start"] = self.scope.window_start.isoformat()
            meta["window_end"] = self.scope.window_end.isoformat()
        if self.scope.read_start is not None and self.scope.read_start != self.scope.window_start:
            meta["read_start"] = self.scope.read_start.isoformat()
        if self.watermark is not None:
            meta["watermark"] = self.watermark if isinstance(self.watermark, int) else self.watermark.isoformat()
        return meta


def ensure_bronze_objects(conn: psycopg.Connection, table: BronzeTable) -> None:
    """Bring the warehouse up to date (`migrations.migrate`: the ledger, the watermark table and
    every other shape change), then create `table` if missing (with its version identity or
    unique append key) or give it the identity its declaration asks for.

    Checked first without DDL: even `create ... if not exists` takes table locks, which would
    deadlock against a load in progress. Creation itself is serialized (concurrent DDL races).
    """
    migrations.migrate(conn)
    if all(_bronze_objects_present(conn, table)):
        return
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in table.all_columns
    )
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('dw_platform.bronze_ddl', 0))")
        # Again under the lock: a concurrent load may have created them while this one waited, and
        # is now loading; repeating its DDL here would lock tables it holds and deadlock with it.
        table_ok, identity_ok = _bronze_objects_present(conn, table)
        if not table_ok:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(table.schema)))
            conn.execute(sql.SQL("create table if not exists {} ({})").format(table.ident, cols))
            for column in table.index_columns:
                conn.execute(
                    sql.SQL("create index if not exists {} on {} ({})").format(
                        sql.Identifier(f"{table.name}_{column.strip('_')}_idx"), table.ident, sql.Identifier(column)
                    )
                )
        if table.keeps_versions and not identity_ok:
            _ensure_row_hash(conn, table)
        if table.append_key and not identity_ok:
            _ensure_append_key(conn, table)


def _bronze_objects_present(conn: psycopg.Connection, table: BronzeTable) -> tuple[bool, bool]:
    """(table exists, its identity is in place: the row hash of a version-keeping table, the
    unique key index and no row hash of an append-by-key table)."""
    table_ok, key_index = conn.execute(
        "select to_regclass(%s) is not null, to_regclass(%s) is not null",
        (table.ident.as_string(conn), sql.Identifier(table.schema, _append_key_index(table)).as_string(conn)),
    ).fetchone()
    if not table_ok:
        return False, False
    if table.keeps_versions:
        return True, _has_column(conn, table, ROW_HASH.name)
    if table.append_key:
        return True, key_index and not _has_column(conn, table, ROW_HASH.name)
    return True, True


def _has_column(conn: psycopg.Connection, table: BronzeTable, column: str) -> bool:
    return conn.execute(
        "select exists (select from information_schema.columns where table_schema = %s and table_name = %s"
        " and column_name = %s)",
        (table.schema, table.name, column),
    ).fetchone()[0]


def _ensure_row_hash(conn: psycopg.Connection, table: BronzeTable) -> None:
    """The version identity of a version-keeping table. A table loaded before it kept versions
    gets the column filled once from its rows (a lineage column, not a change of the data); of
    identical versions loaded twice by the old replace loads, the first loaded stays."""
    conn.execute(
        sql.SQL("alter table {} add column if not exists {} text").format(table.ident, sql.Identifier(ROW_HASH.name))
    )
    _set_hash_settings(conn)
    conn.execute(
        sql.SQL("update {t} set {h} = {expr} where {h} is null").format(
            t=table.ident, h=sql.Identifier(ROW_HASH.name), expr=_row_hash_expr(table, table.ident)
        )
    )
    conn.execute(
        sql.SQL(
            "delete from {t} a using {t} b where a.{h} = b.{h} and (a._bronze_load_ts, a.ctid) > (b._bronze_load_ts, b.ctid)"
        ).format(t=table.ident, h=sql.Identifier(ROW_HASH.name))
    )
    conn.execute(
        sql.SQL("create unique index if not exists {} on {} ({})").format(
            sql.Identifier(f"{table.name}_row_hash_key"), table.ident, sql.Identifier(ROW_HASH.name)
        )
    )


def _append_key_index(table: BronzeTable) -> str:
    return f"{table.name}_{table.append_key}_key"


def _ensure_append_key(conn: psycopg.Connection, table: BronzeTable) -> None:
    """The unique index on the append key. A table that kept versions by row hash before (the
    same rows, each once) loses the hash column and its index, and a plain index on the key
    (both now redundant, and each would cost every load); its rows stay as they are. Fails if
    the table holds a key twice: then it cannot be appended to by key."""
    conn.execute(sql.SQL("alter table {} drop column if exists {}").format(table.ident, sql.Identifier(ROW_HASH.name)))
    conn.execute(
        sql.SQL("create unique index if not exists {} on {} ({})").format(
            sql.Identifier(_append_key_index(table)), table.ident, sql.Identifier(table.append_key)
        )
    )
    conn.execute(
        sql.SQL("drop index if exists {}").format(
            sql.Identifier(table.schema, f"{table.name}_{table.append_key.strip('_')}_idx")
        )
    )


def _row_hash_expr(table: BronzeTable, alias: sql.Composable) -> sql.Composable:
    """md5 over the text of every source column (null-safe, column order fixed by the table)."""
    return sql.SQL("md5(row({})::text)").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(c.name)) for c in table.columns)
    )


def _set_hash_settings(conn: psycopg.Connection) -> None:
    """Fix how values print, so a row hashes the same from any session (set for the transaction)."""
    conn.execute(
        "set local datestyle = 'ISO, YMD'; set local timezone = 'UTC'; set local extra_float_digits = 1;"
        " set local intervalstyle = 'postgres'; set local bytea_output = 'hex'"
    )


def load(
    conn: psycopg.Connection,
    table: BronzeTable,
    rows: RowSource,
    *,
    asset_key: str,
    scope: LoadScope,
    source: str,
    watermark: Watermark | None = None,
    run_id: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    after_copy: Callable[[psycopg.Connection, uuid.UUID, datetime], None] | None = None,
    content_sha256: Callable[[], str | None] | None = None,
) -> LoadResult:
    """Load the rows of `rows` for `scope` into `table`, exactly once (see the module docstring).

    `conn` must be in autocommit mode (each step opens its own transaction).
    `after_copy(conn, batch_id, load_ts)` runs inside the same transaction after the rows, for
    side tables that must change together with them (e.g. a quarantine table).
    `content_sha256()`, asked once the rows are read, gives the hash of the file read, for the ledger.
    An exception with a `ledger_status` attribute closes the ledger entry with that status
    instead of `failed` (a file refused as identical to one loaded before).
    Raises `dg.Failure` with a one-line reason; nothing of a failed load is committed. Lost or
    timed-out connections may be retried; configuration, authentication, bad data and bad SQL
    fail at once.
    """
    batch_id = uuid.uuid4()
    started_at = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    progress = _Progress()
    ledger = _Ledger(batch_id, asset_key, table, scope, source, run_id, started_at)
    try:
        ensure_bronze_objects(conn, table)
        ledger.begin(conn)
        ledger.close_abandoned(conn)
        with conn.transaction():
            for key in sorted(scope.partition_keys):
                conn.execute(
                    "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{table.qualified_name}:{key}",),
                )
            batches = rows(conn) if callable(rows) else rows
            lineage = (started_at, batch_id, source)
            id_range = (None, None)
            if table.keeps_versions:
                replaced = 0
                numeric = watermark is not None and _is_integer(table, watermark.column)
                loaded, *id_range = _append_new_versions(
                    conn, table, batches, lineage, progress, log, watermark.column if numeric else None
                )
            elif table.append_key:
                replaced = 0
                high_water = _max_key(conn, table)
                _copy(conn, table, table.ident, table.all_columns, batches, lineage, progress, log)
                loaded = progress.rows
                id_range = _key_range_above(conn, table, high_water)
            else:
                replaced = conn.execute(
                    sql.SQL("delete from {} where ").format(table.ident) + scope.where, scope.params
                ).rowcount
                _copy(conn, table, table.ident, table.all_columns, batches, lineage, progress, log)
                loaded = progress.rows
            if after_copy is not None:
                after_copy(conn, batch_id, started_at)
            newest = _advance_watermark(conn, table, scope, watermark, progress.rows) if watermark else None
            seconds = time.perf_counter() - t0
            ledger.succeed(conn, progress.rows, loaded, replaced, id_range, content_sha256 and content_sha256())
    except Exception as exc:
        message = _describe(exc, table, scope, progress.rows)
        ledger.fail(conn, message, getattr(exc, "ledger_status", "failed"), content_sha256 and content_sha256())
        raise dg.Failure(
            description=message, metadata={"batch_id": str(batch_id)}, allow_retries=is_transient(exc)
        ) from exc
    # Again after the commit: an attempt killed just before this one may have held the
    # partition's lock until its session ended, after the first look.
    ledger.close_abandoned(conn)
    return LoadResult(table, batch_id, scope, progress.rows, loaded, replaced, seconds, newest)


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: a connection that was lost or timed out after it worked. Configuration,
    authentication, bad data and bad SQL fail the same way again."""
    if getattr(exc, "transient", None) is not None:
        return bool(exc.transient)
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate or ""
        # 28xxx: authentication; 3D000: no such database; 42xxx would be a ProgrammingError.
        return not state.startswith("28") and state != "3D000"
    return isinstance(exc, (ConnectionError, TimeoutError))


@dataclass
class _Progress:
    rows: int = 0


@dataclass
class _Ledger:
    """The load's entry in bronze.batch_ledger, from `running` to how it ended."""

    batch_id: uuid.UUID
    asset_key: str
    table: BronzeTable
    scope: LoadScope
    source: str
    run_id: str | None
    started_at: datetime
    begun: bool = False

    def begin(self, conn: psycopg.Connection) -> None:
        """Committed before the load's transaction starts, so an attempt that never ends is seen."""
        conn.execute(
            """
            insert into bronze.batch_ledger (batch_id, asset_key, target_table, partition_key, source,
                window_start, window_end, read_start, read_end, status, dagster_run_id, started_at,
                backend_pid, backend_start)
            select %s, %s, %s, %s, %s, %s, %s, %s, %s, 'running', %s, %s, pid, backend_start
            from pg_stat_activity where pid = pg_backend_pid()
            """,
            (*self._identity(), self.run_id, self.started_at),
        )
        self.begun = True

    def _identity(self) -> tuple:
        """The entry's batch, asset, table, partition, source and windows, in the ledger's column order."""
        s = self.scope
        return (
            self.batch_id,
            self.asset_key,
            self.table.qualified_name,
            s.label,
            self.source,
            s.window_start,
            s.window_end,
            s.read_start,
            s.read_end,
        )

    def close_abandoned(self, conn: psycopg.Connection) -> None:
        """Mark `running` entries whose database session has ended (killed clients, lost
        connections) as `abandoned`: their transaction rolled back, nothing of them is in bronze."""
        conn.execute(
            """
            update bronze.batch_ledger l set status = 'abandoned', finished_at = clock_timestamp(),
                error = 'the load ended without finishing (process killed or connection lost); nothing was committed'
            where status = 'running' and batch_id <> %s and not exists (
                select from pg_stat_activity a where a.pid = l.backend_pid and a.backend_start = l.backend_start)
            """,
            (self.batch_id,),
        )

    def succeed(self, conn, rows_read: int, rows_loaded: int, rows_replaced: int, id_range, sha256) -> None:
        """Inside the load's transaction: the entry commits with the rows. finished_at is the
        time of this statement, the last before the commit (not the transaction's start)."""
        conn.execute(
            """
            update bronze.batch_ledger set status = 'succeeded', rows_read = %s, rows_loaded = %s,
                rows_replaced = %s, first_id = %s, last_id = %s, content_sha256 = %s,
                finished_at = clock_timestamp()
            where batch_id = %s
            """,
            (rows_read, rows_loaded, rows_replaced, *id_range, sha256, self.batch_id),
        )

    def fail(self, conn: psycopg.Connection, message: str, status: str = "failed", sha256: str | None = None) -> None:
        """Record the failure on a fresh connection: the load's own may be what broke. If the
        warehouse cannot be reached at all, the entry stays `running` until a later load
        marks it `abandoned`."""
        try:
            with _fresh_connection(conn) as fresh:
                fresh.execute(
                    """
                    insert into bronze.batch_ledger (batch_id, asset_key, target_table, partition_key, source,
                        window_start, window_end, read_start, read_end, status, error, dagster_run_id,
                        started_at, finished_at, content_sha256)
                    values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp(), %s)
                    on conflict (batch_id) do update set status = excluded.status, error = excluded.error,
                        finished_at = excluded.finished_at, content_sha256 = excluded.content_sha256
                    """,
                    (*self._identity(), status, message, self.run_id, self.started_at, sha256),
                )
        except psycopg.Error:
            pass  # the warehouse is gone: the `running` entry (if any) tells the story later


def _fresh_connection(conn: psycopg.Connection) -> psycopg.Connection:
    """A new autocommit connection with the settings (password included) of `conn`."""
    password = conn.pgconn.password
    return psycopg.connect(
        conn.info.dsn, password=password.decode() if password else None, autocommit=True, connect_timeout=10
    )


def _copy(
    conn,
    table: BronzeTable,
    target: sql.Composable,
    columns: Sequence[Column],
    batches,
    lineage: tuple,
    progress: _Progress,
    log,
) -> None:
    """COPY of `batches` (source columns, plus `lineage` appended to every row) into `columns` of
    `target`: binary, or text when the batches are `CopyText`. A `CopyData` batch is written as it
    is; an Arrow record batch (columns named as the table's) becomes COPY tuples a whole column at
    a time (`_arrow_tuples`)."""
    batches = iter(batches)
    first = next(batches, None)
    text = isinstance(first, CopyText)
    statement = sql.SQL("copy {} ({}) from stdin (format {})").format(
        target, sql.SQL(", ").join(sql.Identifier(c.name) for c in columns), sql.SQL("text" if text else "binary")
    )
    line_end = "".join("\t" + _copy_text_value(v) for v in lineage) + "\n"
    next_report = 100_000
    arrow = False
    with conn.cursor().copy(statement) as copy:
        if not text:
            copy.set_types([c.pg_type for c in columns])
        for batch in itertools.chain([first] if first is not None else [], batches):
            if text != isinstance(batch, CopyText):
                raise TypeError("a load's batches are all CopyText or none")
            if text:
                copy.write(batch.data.replace("\n", line_end) if lineage else batch.data)
                progress.rows += batch.rows
            elif isinstance(batch, CopyData):
                if lineage:
                    raise TypeError("CopyData carries no lineage: it is for version-keeping tables only")
                copy.write(batch.data)
                progress.rows += batch.rows
            elif hasattr(batch, "num_rows"):  # an Arrow record batch
                if not arrow:
                    copy.write(COPY_SIGNATURE)
                    arrow = True
                copy.write(_arrow_tuples(conn, batch, columns, lineage))
                progress.rows += batch.num_rows
            else:
                for i, row in enumerate(batch):
                    try:
                        copy.write_row((*row, *lineage))
                    except (TypeError, AttributeError, ValueError, psycopg.DataError) as exc:
                        described = describe_mismatch(row, [(c.name, c.pg_type) for c in columns], exc)
                        raise ValueError(f"row {progress.rows + i + 1:,}: {described}") from exc
                progress.rows += len(batch)
            if progress.rows >= next_report:
                log(f"{table.qualified_name}: {progress.rows:,} rows streamed")
                next_report = (progress.rows // 100_000 + 1) * 100_000
        if arrow:
            copy.write(COPY_TRAILER)


_BIG_ENDIAN = {
    "bigint": ">i8",
    "integer": ">i4",
    "smallint": ">i2",
    "date": ">i4",
    "timestamp": ">i8",
    "timestamptz": ">i8",
}
_DAYS_1970_TO_2000 = 10_957
_MICROS_1970_TO_2000 = _DAYS_1970_TO_2000 * 86_400_000_000


def _arrow_tuples(conn, batch, columns: Sequence[Column], lineage: tuple):
    """An Arrow batch's columns plus the lineage values as binary COPY tuples, built a whole
    column at a time: each field is its length (-1 for NULL) and its bytes — text as UTF-8,
    bigint/integer/smallint/date/timestamp as big-endian numbers, numeric from a decimal as
    fixed-width base-10000 digits (`_fixed_values`) — and the lineage values, the same on every
    row, are dumped once by psycopg. Without text columns every row has the same layout, so the
    tuples are one numpy record array (`_fixed_width_tuples`); with text, Arrow joins the fields."""
    import pyarrow as pa
    import pyarrow.compute as pc

    source = columns[: len(columns) - len(lineage)]
    for column in source:
        if column.name not in batch.schema.names:
            raise ValueError(f"the Arrow batch lacks column {column.name}")
        if column.pg_type not in _BIG_ENDIAN and column.pg_type not in ("text", "numeric"):
            raise ValueError(
                f"column {column.name}: Arrow batches load text, bigint, integer, smallint, date, "
                f"timestamp, timestamptz and numeric columns, not {column.pg_type}"
            )
    tail = b"".join(
        len(d).to_bytes(4, "big") + d
        for d in (bytes(conn.adapters.get_dumper(type(v), PyFormat.BINARY)(type(v), conn).dump(v)) for v in lineage)
    )
    if all(c.pg_type != "text" for c in source):
        return _fixed_width_tuples(batch, source, len(columns), tail)
    parts = [pa.scalar(len(columns).to_bytes(2, "big"))]
    for column in source:
        values = batch.column(column.name)
        if column.pg_type == "text":
            payload = values.cast(pa.binary())
        else:
            fixed = _fixed_values(values, column.pg_type)
            payload = pa.array(fixed.view(f"S{fixed.dtype.itemsize}"), pa.binary(fixed.dtype.itemsize)).cast(
                pa.binary()
            )
            payload = pc.if_else(values.is_null(), pa.scalar(None, pa.binary()), payload)
        lengths = pc.fill_null(pc.binary_length(payload).cast(pa.int32()), -1).to_numpy().astype(">i4")
        parts += [pa.array(lengths.view("S4"), pa.binary(4)).cast(pa.binary()), pc.fill_null(payload, b"")]
    parts.append(pa.scalar(tail))
    rows = pc.binary_join_element_wise(*parts, b"")
    import numpy as np

    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=rows.offset * 4)
    return memoryview(rows.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def _fixed_width_tuples(batch, source: Sequence[Column], field_count: int, tail: bytes):
    """The tuples of a batch without text columns: a numpy record array of field count, then
    length and value of each column, then the lineage bytes, one record per row. A NULL's length
    is set to -1 and its value bytes are left out of the output (a boolean mask over the bytes)."""
    import numpy as np

    values = [_fixed_values(batch.column(c.name), c.pg_type) for c in source]
    layout = [("count", ">i2")]
    for i, v in enumerate(values):
        layout += [(f"length{i}", ">i4"), (f"value{i}", v.dtype)]
    rows = np.empty(batch.num_rows, dtype=layout + [("lineage", f"S{len(tail)}")] if tail else layout)
    rows["count"] = field_count
    for i, v in enumerate(values):
        rows[f"length{i}"] = v.dtype.itemsize
        rows[f"value{i}"] = v
    if tail:
        rows["lineage"] = tail
    nulls = [
        (i, batch.column(c.name).is_null().to_numpy(zero_copy_only=False))
        for i, c in enumerate(source)
        if batch.column(c.name).null_count
    ]
    if not nulls:
        return memoryview(rows).cast("B")
    keep = np.ones((len(rows), rows.dtype.itemsize), dtype=bool)
    for i, null in nulls:
        rows[f"length{i}"][null] = -1
        start = rows.dtype.fields[f"value{i}"][1]
        keep[null, start : start + values[i].dtype.itemsize] = False
    return memoryview(rows.view(np.uint8).reshape(len(rows), -1)[keep])


def _fixed_values(values, pg_type: str):
    """An Arrow array as a numpy array of PostgreSQL's binary values of `pg_type` (any value
    where the array is null): big-endian numbers, or binary numerics (`_numeric_values`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pg_type == "numeric":
        return _numeric_values(values)
    if pg_type in ("timestamp", "timestamptz"):
        micros = pc.fill_null(values.cast(pa.timestamp("us", values.type.tz)).cast(pa.int64()), 0).to_numpy()
        return (micros - _MICROS_1970_TO_2000).astype(">i8")
    if pg_type == "date":
        return (pc.fill_null(values.cast(pa.int32()), 0).to_numpy() - _DAYS_1970_TO_2000).astype(">i4")
    return pc.fill_null(values.cast(pa.int64()), 0).to_numpy().astype(_BIG_ENDIAN[pg_type])


def _numeric_values(values):
    """A decimal128(p, s) Arrow array (p <= 18) as PostgreSQL binary numerics: every value in
    the same number of base-10000 digits (PostgreSQL strips the leading and trailing zeros when
    it reads them), so a whole column is one numpy computation."""
    import numpy as np
    import pyarrow as pa

    if not pa.types.is_decimal128(values.type) or values.type.precision > 18:
        raise ValueError(f"numeric columns load from Arrow decimal128 with precision <= 18, not {values.type}")
    precision, scale = values.type.precision, values.type.scale
    fraction = -(-scale // 4)  # base-10000 digits after the decimal point
    ndigits = max(-(-(precision - scale) // 4) + fraction, 1)
    # 16-byte little-endian two's complement per value; with precision <= 18 the low half holds it.
    unscaled = np.frombuffer(values.buffers()[1], dtype="<i8", count=2 * (values.offset + len(values)))
    unscaled = unscaled[2 * values.offset :: 2]
    magnitude = np.abs(unscaled) * 10 ** (4 * fraction - scale)
    numerics = np.zeros(
        len(values),
        dtype=[
            ("ndigits", ">i2"),
            ("weight", ">i2"),
            ("sign", ">u2"),
            ("dscale", ">i2"),
            ("digits", ">i2", (ndigits,)),
        ],
    )
    numerics["ndigits"] = ndigits
    numerics["weight"] = ndigits - fraction - 1
    numerics["sign"] = np.where(unscaled < 0, 0x4000, 0)
    numerics["dscale"] = scale
    for i in range(ndigits):
        numerics["digits"][:, i] = magnitude // 10_000 ** (ndigits - 1 - i) % 10_000
    return numerics


def _copy_text_value(value: Any) -> str:
    """A lineage value in COPY text format."""
    if value is None:
        return "\\N"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _append_new_versions(
    conn, table: BronzeTable, batches, lineage: tuple, progress: _Progress, log, id_column: str | None
) -> tuple[int, int | None, int | None]:
    """Stage the source columns in a temporary table, then append the versions bronze does not
    hold yet with the load's lineage (each once, however often it was read; in hash order, so
    concurrent loads whose reads overlap wait for each other instead of deadlocking). Returns
    the rows appended and, given `id_column`, the lowest and highest value of it among them."""
    stage = sql.Identifier("_bronze_stage")
    conn.execute(
        sql.SQL("create temporary table {} (like {} including defaults) on commit drop").format(stage, table.ident)
    )
    _copy(conn, table, stage, table.columns, batches, (), progress, log)
    _set_hash_settings(conn)
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    lineage_names = sql.SQL(", ").join(sql.Identifier(c.name) for c in LINEAGE_COLUMNS)
    track = sql.Identifier(id_column) if id_column else sql.NULL
    return conn.execute(
        sql.SQL(
            """
        with appended as (
            insert into {table} ({names}, {lineage_names}, {hash})
            select {names}, %s, %s, %s, {expr} as {hash} from {stage} s order by {hash}
            on conflict ({hash}) do nothing
            returning {track} as id
        )
        select count(*), min(id), max(id) from appended
        """
        ).format(
            table=table.ident,
            names=names,
            lineage_names=lineage_names,
            hash=sql.Identifier(ROW_HASH.name),
            stage=stage,
            track=track,
            expr=_row_hash_expr(table, sql.Identifier("s")),
        ),
        lineage,
    ).fetchone()


def missing_versions(conn: psycopg.Connection, table: BronzeTable, batches: Batches) -> tuple[int, int]:
    """How many of the source rows in `batches` are versions the version-keeping `table` does
    not hold: (rows read, rows missing). Stages them like a load does, commits nothing."""
    with conn.transaction(force_rollback=True):
        stage = sql.Identifier("_bronze_stage")
        conn.execute(
            sql.SQL("create temporary table {} (like {} including defaults) on commit drop").format(stage, table.ident)
        )
        progress = _Progress()
        _copy(conn, table, stage, table.columns, batches, (), progress, lambda _msg: None)
        _set_hash_settings(conn)
        missing = conn.execute(
            sql.SQL(
                "select count(*) from (select {expr} as h from {stage} s) staged"
                " where not exists (select from {table} b where b.{hash} = staged.h)"
            ).format(
                expr=_row_hash_expr(table, sql.Identifier("s")),
                stage=stage,
                table=table.ident,
                hash=sql.Identifier(ROW_HASH.name),
            )
        ).fetchone()[0]
    return progress.rows, missing


def copy_side_rows(
    conn, table: BronzeTable, rows: Sequence[Sequence[Any]], batch_id: uuid.UUID, load_ts: datetime, source: str
) -> int:
    """COPY `rows` into a side table of a load (child rows, raw documents) with the load's lineage;
    for `after_copy` callbacks, inside the load's transaction. Returns the row count."""
    progress = _Progress()
    _copy(conn, table, table.ident, table.all_columns, [rows], (load_ts, batch_id, source), progress, lambda _msg: None)
    return progress.rows


def _max_key(conn: psycopg.Connection, table: BronzeTable) -> int | None:
    """The highest append key in bronze (its unique index answers)."""
    return conn.execute(
        sql.SQL("select max({}) from {}").format(sql.Identifier(table.append_key), table.ident)
    ).fetchone()[0]


def _key_range_above(conn: psycopg.Connection, table: BronzeTable, high_water: int | None) -> tuple:
    """The lowest and highest key above the earlier high-water mark: this load's keys."""
    key = sql.Identifier(table.append_key)
    return conn.execute(
        sql.SQL("select min({k}), max({k}) from {t} where {k} > %s").format(k=key, t=table.ident),
        (high_water if high_water is not None else -(1 << 63),),
    ).fetchone()


def _is_integer(table: BronzeTable, column: str) -> bool:
    return next(c for c in table.columns if c.name == column).pg_type in ("integer", "bigint", "smallint")


def _advance_watermark(
    conn, table: BronzeTable, scope: LoadScope, watermark: Watermark, rows_read: int
) -> datetime | int | None:
    """Advance the watermark to the newest value this load read (never backwards) and record
    the window read; returns the newest value read."""
    col = sql.Identifier(watermark.column)
    if table.keeps_versions:  # everything read is in the stage
        newest = conn.execute(sql.SQL("select max({}) from _bronze_stage").format(col)).fetchone()[0]
    else:
        newest = conn.execute(
            sql.SQL("select max({}) from {} where ").format(col, table.ident) + scope.where, scope.params
        ).fetchone()[0]
    target = sql.Identifier("last_watermark_id" if _is_integer(table, watermark.column) else "last_watermark_ts")
    read_start, read_end = scope.read_params if scope.read_start is not None else (None, None)
    conn.execute(
        sql.SQL("""
        insert into bronze.etl_watermarks (watermark_key, {target}, last_run_ts, records_extracted,
            last_read_start, last_read_end, last_partition_key)
        values (%s, %s, clock_timestamp(), %s, %s, %s, %s)
        on conflict (watermark_key) do update set
            {target} = greatest(bronze.etl_watermarks.{target}, excluded.{target}),
            last_run_ts = excluded.last_run_ts,
            records_extracted = bronze.etl_watermarks.records_extracted + excluded.records_extracted,
            last_read_start = excluded.last_read_start,
            last_read_end = excluded.last_read_end,
            last_partition_key = excluded.last_partition_key
        """).format(target=target),
        (watermark.key, newest, rows_read, read_start, read_end, scope.label),
    )
    return newest


def _describe(exc: Exception, table: BronzeTable, scope: LoadScope, rows: int) -> str:
    where = f"loading {table.qualified_name} partition {scope.label} failed after reading {rows:,} rows"
    where += " (nothing was committed)"
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        detail = exc.diag.message_primary
        if exc.diag.context:
            detail += f" ({exc.diag.context.strip()})"
        return f"{where}: {detail}"
    return f"{where}: {exc}"


def _naive_utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is None else ts.astimezone(timezone.utc).replace(tzinfo=None)
