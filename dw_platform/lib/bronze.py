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
- keep versions (`BronzeTable.version_key`): nothing is deleted; only versions bronze does not
  hold yet are appended. A version is identified by its business key + modification time + a
  hash of every source column (`_bronze_row_hash`, unique — with the partition column in front
  for a partitioned table), so a re-run or a backfill adds what is new and never drops or
  duplicates a version captured earlier. Rows are appended `STAGE_ROWS` at a time, while the
  reader goes on fetching (it runs ahead by `READ_AHEAD` batches): Arrow batches are hashed here
  and copied straight in after a probe of the version index (`_append_arrow_versions`), other
  batches go through a temporary stage (`_append_new_versions`). Version-keeping loads of a
  table take turns (one lock for the table): their reads may overlap (a lookback re-reads the
  day before), and appending the same version from two loads at once could deadlock;
- append by key (`BronzeTable.append_key`): for immutable source rows with an increasing key (an
  auto-increment rowid), read strictly above bronze's highest key under the partition's lock.
  Nothing is deleted or staged: the rows are copied straight into the table, whose unique index
  on the key rejects — and so fails the whole load — a key loaded before.

A table that grows by time can be range-partitioned (`BronzeTable.partitions`, see
`bronze_partitions`): a load first creates the partitions its read window needs, and touches only
those.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat

from dw_platform.lib import bronze_partitions, migrations
from dw_platform.lib.bronze_partitions import RangePartitions
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
    description: str = ""  # shown in the UI's column schema


LINEAGE_COLUMNS = (
    Column("_bronze_load_ts", "timestamptz", "When the load that wrote the row committed."),
    Column("_bronze_batch_id", "uuid", "The load that wrote the row (bronze.batch_ledger.batch_id)."),
    Column("_bronze_source_file", "text", "What the row was read from: the source table, file or blob."),
)
ROW_HASH = Column("_bronze_row_hash", "text", "md5 over every source column: the version's identity (unique).")


@dataclass(frozen=True)
class ExpressionIndex:
    """An index on an SQL expression over a bronze table's columns, named `<table>_<name>_idx`:
    for readers that look rows up by a cleaned value (silver's trimmed order_id), which an index
    on the column cannot answer. The expression must be written as the readers write it.
    `columns` follow it in the index (a key's rows of one day: the trimmed key, then the day)."""

    name: str
    expression: str
    columns: tuple[str, ...] = ()

    def indexed(self) -> sql.Composable:
        return sql.SQL(", ").join(
            [sql.SQL("({})").format(sql.SQL(self.expression)), *(sql.Identifier(c) for c in self.columns)]
        )


@dataclass(frozen=True)
class BronzeTable:
    """A bronze landing table: the source's columns plus the lineage columns.

    `index_columns` and `expression_indexes` are created with the table, and added to a table
    that lacks them on its next load (once; a plain CREATE INDEX, which holds off writes meanwhile).

    `version_key` (business key + modification time) makes the table keep versions: loads append
    only versions not yet present, identified by `_bronze_row_hash` (md5 of every source column).
    `append_key` (an integer column, unique in bronze) makes loads append every row they read,
    which must lie above the highest key bronze held when the load took its lock.
    `partitions` range-partitions the table by one of its columns (loads need a read window).
    """

    schema: str
    name: str
    columns: tuple[Column, ...]
    index_columns: tuple[str, ...] = ()
    version_key: tuple[str, ...] = ()
    append_key: str | None = None
    partitions: RangePartitions | None = None
    expression_indexes: tuple[ExpressionIndex, ...] = ()

    def __post_init__(self):
        if self.version_key and self.append_key:
            raise ValueError(f"{self.qualified_name}: a table keeps versions or appends by key, not both")
        if self.partitions and self.partitions.column not in self.source_column_names:
            raise ValueError(f"{self.qualified_name}: partition column {self.partitions.column} is not a column")
        if self.partitions and self.append_key:
            raise ValueError(f"{self.qualified_name}: an append key is unique over the whole table, not partitioned")

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
        return dg.TableSchema(
            columns=[dg.TableColumn(c.name, c.pg_type, description=c.description or None) for c in self.all_columns]
        )

    def declared_indexes(self) -> list[tuple[str, sql.Composable]]:
        """(name, indexed column or expression) of `index_columns` and `expression_indexes`."""
        return [(f"{self.name}_{c.strip('_')}_idx", sql.Identifier(c)) for c in self.index_columns] + [
            (f"{self.name}_{i.name}_idx", i.indexed()) for i in self.expression_indexes
        ]


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

    def with_history(self, column: str) -> LoadScope:
        """This scope widened to everything before it and to rows whose `column` is NULL: the
        read of a history load (the first partition's, which takes what no partition holds)."""
        where = sql.SQL("({col} < %(window_end)s or {col} is null)").format(col=sql.Identifier(column))
        return LoadScope(
            self.partition_keys, where, self.params, self.window_start, self.window_end, None, self.read_end
        )

    def resumed_from(self, since: datetime | None) -> LoadScope:
        """This scope, reading back to `since` (where the previous load stopped: its watermark)
        when that lies before the read: a run after skipped or failed runs reads what they did
        not. A later `since` (a backfill of old partitions) changes nothing."""
        if since is None or self.read_start is None:
            return self
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
        if since >= self.read_start:
            return self
        return LoadScope(
            self.partition_keys, self.where, self.params, self.window_start, self.window_end, since, self.read_end
        )

    @property
    def label(self) -> str:
        keys = self.partition_keys
        return keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"

    @property
    def read_params(self) -> tuple[datetime | None, datetime | None]:
        """The read window as naive UTC timestamps, for a source query's parameters."""
        return tuple(None if t is None else _naive_utc(t) for t in (self.read_start, self.read_end))


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
        if self.scope.read_start is None and self.scope.read_end is not None:
            meta["history"] = "every row before the window, and every row without a value"
        if self.watermark is not None:
            meta["watermark"] = self.watermark if isinstance(self.watermark, int) else self.watermark.isoformat()
        return meta


def combined(results: Sequence[LoadResult]) -> LoadResult:
    """Several loads of one run (a range run loaded window by window) as one result: their rows
    and seconds summed, the scope from the first window's start to the last one's end, the last
    load's batch and the newest watermark."""
    first, last = results[0], results[-1]
    scope = LoadScope(
        tuple(k for r in results for k in r.scope.partition_keys),
        first.scope.where,
        first.scope.params,
        first.scope.window_start,
        last.scope.window_end,
        first.scope.read_start,
        last.scope.read_end,
    )
    watermarks = [r.watermark for r in results if r.watermark is not None]
    return LoadResult(
        first.table,
        last.batch_id,
        scope,
        sum(r.rows_read for r in results),
        sum(r.rows_loaded for r in results),
        sum(r.rows_replaced for r in results),
        sum(r.seconds for r in results),
        max(watermarks, default=None),
    )


def ensure_bronze_objects(conn: psycopg.Connection, table: BronzeTable) -> None:
    """Bring the warehouse up to date (`migrations.migrate`: the ledger, the watermark and shape
    migration tables and every other versioned change), then create `table` if missing (with its
    version identity or unique append key, range-partitioned if it says so) or apply the shape
    migrations its declaration asks for.

    Checked first without DDL: even `create ... if not exists` takes table locks, which would
    deadlock against a load in progress. Creation itself is serialized (concurrent DDL races).
    """
    migrations.migrate(conn)
    if all(_bronze_objects_present(conn, table)):
        return
    with conn.transaction():
        conn.execute(bronze_partitions.DDL_LOCK)
        # Again under the lock: a concurrent load may have created them while this one waited, and
        # is now loading; repeating its DDL here would lock tables it holds and deadlock with it.
        table_ok, identity_ok, indexes_ok = _bronze_objects_present(conn, table)
        exists = conn.execute("select to_regclass(%s) is not null", (table.ident.as_string(conn),)).fetchone()[0]
        if not exists:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(table.schema)))
            _create_table(conn, table)
            _create_indexes(conn, table)
            if table.keeps_versions:
                _record(conn, table, HASH_MIGRATION)
            if table.partitions:
                _record(conn, table, bronze_partitions.PARTITION_MIGRATION)
        elif not table_ok:
            _partition_existing_table(conn, table)
        elif table.keeps_versions and not identity_ok:
            _rehash_versions(conn, table)
        elif table.append_key and not identity_ok:
            _ensure_append_key(conn, table)
        if exists and table_ok and not indexes_ok:
            _create_declared_indexes(conn, table)


def _create_table(conn: psycopg.Connection, table: BronzeTable) -> None:
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in table.all_columns
    )
    if table.partitions:
        bronze_partitions.create_partitioned(conn, table.schema, table.name, cols, table.partitions)
    else:
        conn.execute(sql.SQL("create table {} ({})").format(table.ident, cols))


def _create_indexes(conn: psycopg.Connection, table: BronzeTable) -> None:
    """The declared indexes and the table's identity: the version index, or the append key's."""
    _create_declared_indexes(conn, table)
    if table.keeps_versions:
        conn.execute(_version_index(table))
    if table.append_key:
        _ensure_append_key(conn, table)


# ---- SHAPE MIGRATIONS: one-time, recorded in bronze.shape_migrations, each in the caller's
# transaction (all of it happens or none). A table created by this code never needs them.


def _partition_existing_table(conn: psycopg.Connection, table: BronzeTable) -> None:
    """A table created before bronze partitioned it becomes the partitioned table: its rows move
    as they are, except that a version-keeping table's row hashes are computed again (the
    current definition, `_row_hash_expr`) and a version held twice (loads from before bronze kept
    versions) is moved once, the first loaded. Both migrations are recorded."""
    old = bronze_partitions.set_aside_unpartitioned(conn, table.schema, table.name)
    _create_table(conn, table)
    names = [c.name for c in table.all_columns]
    select = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    if table.keeps_versions:
        row_hash = sql.SQL("{} as {}").format(_row_hash_expr(table, old), sql.Identifier(ROW_HASH.name))
        select = sql.SQL(", ").join(
            row_hash if n == ROW_HASH.name else sql.SQL("{}.{}").format(old, sql.Identifier(n)) for n in names
        )
        first = sql.SQL(", ").join(sql.Identifier(c) for c in _version_columns(table))
        source = sql.SQL(
            "(select distinct on ({first}) * from (select {select} from {old}) v order by {first}, {lineage})"
        ).format(first=first, select=select, old=old, lineage=sql.SQL("_bronze_load_ts, _bronze_batch_id::text"))
        select = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    else:
        source = old
    moved = bronze_partitions.move_into_partitions(
        conn, old, source, select, table.schema, table.name, table.partitions, names
    )
    _create_indexes(conn, table)
    _record(conn, table, bronze_partitions.PARTITION_MIGRATION, moved)
    if table.keeps_versions:
        _record(conn, table, HASH_MIGRATION, moved)


def _rehash_versions(conn: psycopg.Connection, table: BronzeTable) -> None:
    """The row hashes of a version-keeping table from before the current definition (or before it
    kept versions) computed again from its rows — a lineage column, not the data —, a version
    held twice kept once (the first loaded), and the version index built. Recorded."""
    index = sql.Identifier(table.schema, _version_index_name(table))
    conn.execute(sql.SQL("drop index if exists {}").format(index))
    conn.execute(
        sql.SQL("alter table {} add column if not exists {} text").format(table.ident, sql.Identifier(ROW_HASH.name))
    )
    rows = conn.execute(
        sql.SQL("update {t} set {h} = {expr}").format(
            t=table.ident, h=sql.Identifier(ROW_HASH.name), expr=_row_hash_expr(table, table.ident)
        )
    ).rowcount
    conn.execute(
        sql.SQL(
            "delete from {t} a using {t} b where a.{h} = b.{h} and (a._bronze_load_ts, a.ctid) > (b._bronze_load_ts, b.ctid)"
        ).format(t=table.ident, h=sql.Identifier(ROW_HASH.name))
    )
    conn.execute(_version_index(table))
    _record(conn, table, HASH_MIGRATION, rows)


# ---- end of the shape migrations


def _version_index_name(table: BronzeTable) -> str:
    return f"{table.name}_version_key" if table.partitions else f"{table.name}_row_hash_key"


def _version_index(table: BronzeTable) -> sql.Composable:
    """The unique index a version-keeping load appends through: the row hash, behind the
    partition column when there is one (PostgreSQL's unique indexes on a partitioned table
    include it; rows without a value count as one partition, hence NULLS NOT DISTINCT). Its
    leading column also serves every scan of a window of the partition column."""
    return sql.SQL("create unique index if not exists {} on {} ({}){}").format(
        sql.Identifier(_version_index_name(table)),
        table.ident,
        sql.SQL(", ").join(sql.Identifier(c) for c in _version_columns(table)),
        sql.SQL(" nulls not distinct" if table.partitions else ""),
    )


def _create_declared_indexes(conn: psycopg.Connection, table: BronzeTable) -> None:
    for name, indexed in table.declared_indexes():
        conn.execute(
            sql.SQL("create index if not exists {} on {} ({})").format(sql.Identifier(name), table.ident, indexed)
        )


def _version_columns(table: BronzeTable) -> list[str]:
    return ([table.partitions.column] if table.partitions else []) + [ROW_HASH.name]


def _bronze_objects_present(conn: psycopg.Connection, table: BronzeTable) -> tuple[bool, bool, bool]:
    """(table exists in its shape — partitioned if it says so —, its identity is in place: the
    version index and current row hash of a version-keeping table, the unique key index and no row
    hash of an append-by-key table; every declared index exists)."""
    names = [name for name, _ in table.declared_indexes()]
    table_ok, version_index, key_index, indexes_ok = conn.execute(
        "select to_regclass(%s) is not null, to_regclass(%s) is not null, to_regclass(%s) is not null,"
        " (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        "  where n.nspname = %s and c.relname = any(%s) and c.relkind in ('i', 'I')) = %s",
        (
            table.ident.as_string(conn),
            sql.Identifier(table.schema, _version_index_name(table)).as_string(conn),
            sql.Identifier(table.schema, append_key_index(table)).as_string(conn),
            table.schema,
            names,
            len(names),
        ),
    ).fetchone()
    identity_ok = _identity_present(conn, table, table_ok, version_index, key_index)
    return identity_ok[0], identity_ok[1], indexes_ok


def _identity_present(
    conn: psycopg.Connection, table: BronzeTable, table_ok: bool, version_index: bool, key_index: bool
) -> tuple[bool, bool]:
    """(table exists in its shape, its identity is in place) for `_bronze_objects_present`."""
    if not table_ok:
        return False, False
    if table.partitions and not bronze_partitions.is_partitioned(conn, table.schema, table.name):
        return False, False
    if table.keeps_versions:
        rehashed = conn.execute(
            "select exists (select from bronze.shape_migrations where table_name = %s and migration = %s)",
            (table.qualified_name, HASH_MIGRATION),
        ).fetchone()[0]
        return True, version_index and rehashed
    if table.append_key:
        return True, key_index and not _has_column(conn, table, ROW_HASH.name)
    return True, True


def _has_column(conn: psycopg.Connection, table: BronzeTable, column: str) -> bool:
    return conn.execute(
        "select exists (select from information_schema.columns where table_schema = %s and table_name = %s"
        " and column_name = %s)",
        (table.schema, table.name, column),
    ).fetchone()[0]


def append_key_index(table: BronzeTable) -> str:
    """The name of the unique index on an append-by-key table's key."""
    return f"{table.name}_{table.append_key}_key"


def _ensure_append_key(conn: psycopg.Connection, table: BronzeTable) -> None:
    """The unique index on the append key. A table that kept versions by row hash before (the
    same rows, each once) loses the hash column and its index, and a plain index on the key
    (both now redundant, and each would cost every load); its rows stay as they are. Fails if
    the table holds a key twice: then it cannot be appended to by key."""
    conn.execute(sql.SQL("alter table {} drop column if exists {}").format(table.ident, sql.Identifier(ROW_HASH.name)))
    conn.execute(
        sql.SQL("create unique index if not exists {} on {} ({})").format(
            sql.Identifier(append_key_index(table)), table.ident, sql.Identifier(table.append_key)
        )
    )
    conn.execute(
        sql.SQL("drop index if exists {}").format(
            sql.Identifier(table.schema, f"{table.name}_{table.append_key.strip('_')}_idx")
        )
    )


# A version's row hash: md5 over its source columns as binary COPY fields (each a 4-byte length,
# -1 for NULL, then the value in PostgreSQL's binary form), in table order. The loader computes it
# from the fields it sends (`_arrow_field_parts`), SQL from the stored values with these send functions:
# the same bytes whatever the session's date style or time zone.
_SEND = {
    "text": "textsend",
    "integer": "int4send",
    "bigint": "int8send",
    "smallint": "int2send",
    "boolean": "boolsend",
    "date": "date_send",
    "timestamp": "timestamp_send",
    "timestamptz": "timestamptz_send",
    "numeric": "numeric_send",
    "double precision": "float8send",
    "uuid": "uuid_send",
}
# Types whose binary fields the loader builds from Arrow exactly as the send function writes them
# (not numeric: PostgreSQL normalizes the digits it is sent), so a load can hash them itself.
_HASHED_FROM_ARROW = {"text", "integer", "bigint", "smallint", "boolean", "date", "timestamp", "timestamptz"}
HASH_MIGRATION = "row hash of binary fields"


def _row_hash_expr(table: BronzeTable, alias: sql.Composable) -> sql.Composable:
    """The row hash in SQL (see `_SEND`), of the columns of `alias`."""
    fields = []
    for c in table.columns:
        if c.pg_type not in _SEND:
            raise ValueError(f"{table.qualified_name}: a version-keeping table cannot hash {c.pg_type} ({c.name})")
        value = sql.SQL("{}({}.{})").format(sql.SQL(_SEND[c.pg_type]), alias, sql.Identifier(c.name))
        fields.append(sql.SQL("coalesce(int4send(octet_length({v})) || {v}, '\\xffffffff'::bytea)").format(v=value))
    return sql.SQL("md5({})").format(sql.SQL(" || ").join(fields))


def _record(conn: psycopg.Connection, table: BronzeTable, migration: str, rows: int = 0) -> None:
    conn.execute(
        "insert into bronze.shape_migrations (table_name, migration, rows_moved) values (%s, %s, %s)"
        " on conflict do nothing",
        (table.qualified_name, migration, rows),
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
        if table.partitions:
            if scope.read_end is None:
                raise ValueError(f"{table.qualified_name} is partitioned: a load needs a read window")
            start, end = scope.read_params
            history_until = _naive_utc(scope.window_start) if start is None and scope.window_start else None
            created = bronze_partitions.ensure_partitions(
                conn, table.schema, table.name, table.partitions, start, end, history_until
            )
            if created:
                log(f"{table.qualified_name}: created partition(s) {', '.join(created)}")
        ledger.begin(conn)
        ledger.close_abandoned(conn)
        with conn.transaction():
            # Version-keeping loads take turns for the whole table (see the module docstring).
            for key in ["versions"] if table.keeps_versions else sorted(scope.partition_keys):
                conn.execute(
                    "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{table.qualified_name}:{key}",),
                )
            batches = rows(conn) if callable(rows) else rows
            lineage = (started_at, batch_id, source)
            id_range = (None, None)
            newest = None
            if table.keeps_versions:
                replaced = 0
                batches = iter(batches)
                first = next(batches, None)
                hashed_here = hasattr(first, "num_rows") and all(c.pg_type in _HASHED_FROM_ARROW for c in table.columns)
                append = _append_arrow_versions if hashed_here else _append_new_versions
                loaded, id_range, newest = append(
                    conn,
                    table,
                    itertools.chain([first] if first is not None else [], batches),
                    lineage,
                    progress,
                    log,
                    watermark.column if watermark else None,
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
            if watermark:
                newest = _advance_watermark(conn, table, scope, watermark, progress.rows, newest)
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
        """The entry's batch, asset, table, partition, source and windows, in the ledger's column
        order. A history load's read (no start) is recorded as reading from the earliest time
        there is, so that "read from before its window" holds for it too."""
        s = self.scope
        history = s.read_start is None and s.read_end is not None
        return (
            self.batch_id,
            self.asset_key,
            self.table.qualified_name,
            s.label,
            self.source,
            s.window_start,
            s.window_end,
            datetime.min.replace(tzinfo=timezone.utc) if history else s.read_start,
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
    "boolean": "u1",
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
    boolean as one byte, bigint/integer/smallint/date/timestamp as big-endian numbers, numeric from a decimal as
    fixed-width base-10000 digits (`_fixed_values`) — and the lineage values, the same on every
    row, are dumped once by psycopg. Without text columns every row has the same layout, so the
    tuples are one numpy record array (`_fixed_width_tuples`); with text, Arrow joins the fields."""
    import pyarrow as pa
    import pyarrow.compute as pc

    source = columns[: len(columns) - len(lineage)]
    _check_arrow_columns(batch, source)
    tail = _lineage_bytes(conn, lineage)
    if all(c.pg_type != "text" for c in source):
        return _fixed_width_tuples(batch, source, len(columns), tail)
    count = pa.scalar(len(columns).to_bytes(2, "big"))
    return _joined(pc.binary_join_element_wise(count, *_arrow_field_parts(batch, source), pa.scalar(tail), b""))


def _check_arrow_columns(batch, source: Sequence[Column]) -> None:
    for column in source:
        if column.name not in batch.schema.names:
            raise ValueError(f"the Arrow batch lacks column {column.name}")
        if column.pg_type not in _BIG_ENDIAN and column.pg_type not in ("text", "numeric"):
            raise ValueError(
                f"column {column.name}: Arrow batches load text, boolean, bigint, integer, smallint, date, "
                f"timestamp, timestamptz and numeric columns, not {column.pg_type}"
            )


def _lineage_bytes(conn, lineage: tuple) -> bytes:
    """The lineage values as binary COPY fields, dumped once by psycopg (the same on every row)."""
    return b"".join(
        len(d).to_bytes(4, "big") + d
        for d in (bytes(conn.adapters.get_dumper(type(v), PyFormat.BINARY)(type(v), conn).dump(v)) for v in lineage)
    )


def _arrow_field_parts(batch, source: Sequence[Column]) -> list:
    """Each column of `source` as two Arrow arrays of a row's binary COPY field: its 4-byte length
    (-1 for NULL) and its bytes; `pc.binary_join_element_wise` joins them into rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
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
    return parts


def _joined(rows) -> memoryview:
    """The bytes of an Arrow binary array's values, end to end."""
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


STAGE_ROWS = 50_000  # rows appended at a time (held in memory by the loader or the server)
READ_AHEAD = 6  # batches a reader may fetch ahead while a chunk is appended; see the module docstring


def _append_new_versions(
    conn, table: BronzeTable, batches, lineage: tuple, progress: _Progress, log, watermark: str | None
) -> tuple[int, tuple, Any]:
    """Stage the source columns in a temporary table, `STAGE_ROWS` at a time, and append the
    versions bronze does not hold yet with the load's lineage (each once, however often it was
    read). Returns the rows appended, the lowest and highest value of an integer `watermark`
    column among them, and the newest `watermark` value read.

    Each chunk's rows are hashed once, sorted by the version index's columns (duplicates dropped)
    and appended where one probe of that index finds no such version: sorted, the index grows at
    few places at a time, and a plain INSERT costs less than ON CONFLICT's speculative one (the
    table-wide lock of version-keeping loads means no other load appends meanwhile; the unique
    index stays the guard). Probes, not a join over the table: a merge or hash join would read
    all of bronze's versions for every chunk, so hash and merge joins are off for the append."""
    stage = sql.Identifier("_bronze_stage")
    conn.execute(
        sql.SQL("create temporary table {} (like {} including defaults) on commit drop").format(stage, table.ident)
    )
    conn.execute("set local work_mem = '64MB'; set local enable_hashjoin = off; set local enable_mergejoin = off")
    integer = watermark is not None and _is_integer(table, watermark)
    statements = [
        _append_statement(table, stage, kind, watermark if integer else None)
        for kind in _APPEND_KINDS[bool(table.partitions)]
    ]
    newest_read = sql.SQL("select max({}) from {}").format(sql.Identifier(watermark), stage) if watermark else None
    loaded, ids, newest = 0, [], []
    for chunk in _stage_chunks(batches):
        _copy(conn, table, stage, table.columns, chunk, (), progress, log)
        for statement in statements:
            count, low, high = conn.execute(statement, lineage).fetchone()
            loaded += count
            ids += [v for v in (low, high) if v is not None]
        if newest_read is not None:
            newest.append(conn.execute(newest_read).fetchone()[0])
        conn.execute(sql.SQL("truncate {}").format(stage))
    conn.execute("reset work_mem; reset enable_hashjoin; reset enable_mergejoin")
    newest = [n for n in newest if n is not None]
    return loaded, (min(ids, default=None), max(ids, default=None)), max(newest, default=None)


# The appends of one staged chunk: the whole stage by row hash (a table without partitions), or
# the dated rows by (partition column, row hash) and the undated ones by row hash among the
# undated (`=` never matches NULL; the index's IS NULL condition does).
_APPEND_KINDS = {False: ("all",), True: ("dated", "undated")}


def _append_statement(table: BronzeTable, stage: sql.Identifier, kind: str, track: str | None) -> sql.Composed:
    """INSERT of the staged rows of `kind` that are versions bronze does not hold, with the load's
    lineage (three parameters); returns the rows appended and the lowest and highest `track`."""
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    row_hash = sql.Identifier(ROW_HASH.name)
    identity = sql.SQL(", ").join(sql.Identifier(c) for c in _version_columns(table))
    staged, probe = _kind_sql(table, kind)
    return sql.SQL(
        """
        with appended as (
            insert into {table} ({names}, {lineage_names}, {h})
            select {names}, %s, %s, %s, {h} from (
                select distinct on ({identity}) {names}, {expr} as {h} from {stage} s {staged}
                order by {identity} offset 0
            ) x
            where not exists (select from {table} b where {probe})
            returning {track} as id
        )
        select count(*), min(id), max(id) from appended
        """
    ).format(
        table=table.ident,
        names=names,
        lineage_names=sql.SQL(", ").join(sql.Identifier(c.name) for c in LINEAGE_COLUMNS),
        h=row_hash,
        identity=identity,
        expr=_row_hash_expr(table, sql.Identifier("s")),
        stage=stage,
        staged=staged,
        probe=probe,
        track=sql.Identifier(track) if track else sql.NULL,
    )


def _kind_sql(table: BronzeTable, kind: str) -> tuple[sql.Composable, sql.Composable]:
    """The staged rows `s` of `kind` (see `_APPEND_KINDS`), and the probe of the version index
    for a row `x` of them in bronze `b`."""
    column = sql.Identifier(table.partitions.column) if table.partitions else None
    staged, probe = {
        "all": (sql.SQL(""), sql.SQL("b.{h} = x.{h}")),
        "dated": (sql.SQL("where s.{c} is not null"), sql.SQL("b.{c} = x.{c} and b.{h} = x.{h}")),
        "undated": (sql.SQL("where s.{c} is null"), sql.SQL("b.{c} is null and b.{h} = x.{h}")),
    }[kind]
    return staged.format(c=column), probe.format(c=column, h=sql.Identifier(ROW_HASH.name))


def _append_arrow_versions(
    conn, table: BronzeTable, batches, lineage: tuple, progress: _Progress, log, watermark: str | None
) -> tuple[int, tuple, Any]:
    """The version-keeping append of Arrow batches, without a stage: `_append_new_versions` for
    sources the loader can hash itself (every column in `_HASHED_FROM_ARROW`). For each chunk of
    `STAGE_ROWS` rows, it builds the rows' binary COPY fields a column at a time, hashes each
    row's fields (md5, the definition SQL computes in `_row_hash_expr`), sorts the rows by the
    version index's columns and drops a version read twice, asks the version index which of the
    rest bronze holds (one index probe each, through a small temporary table of keys), and COPYs
    the others, sorted, straight into the table with their hash and the load's lineage. The
    rows cross to PostgreSQL once, and COPY writes them in batches; the table-wide lock of
    version-keeping loads keeps the answer of the probe true until the COPY."""
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    key = table.partitions.column if table.partitions else None
    probe = sql.Identifier("_bronze_probe")
    probe_columns = [Column("i", "integer"), Column("h", "text")] + [c for c in table.columns if c.name == key]
    conn.execute(
        sql.SQL("create temporary table {} ({}) on commit drop").format(
            probe,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in probe_columns
            ),
        )
    )
    conn.execute("set local enable_hashjoin = off; set local enable_mergejoin = off")  # probes, not joins
    held = sql.SQL("select p.i from {p} p where exists (select from {t} b where b.{h} = p.h)")
    if key:
        held = sql.SQL(
            "select p.i from {p} p where p.{k} is not null and exists (select from {t} b where b.{k} = p.{k} and b.{h} = p.h)"
            " union all select p.i from {p} p where p.{k} is null and exists (select from {t} b where b.{k} is null and b.{h} = p.h)"
        )
    held = held.format(p=probe, t=table.ident, h=sql.Identifier(ROW_HASH.name), k=sql.Identifier(key or "i"))
    target = [*table.columns, ROW_HASH, *LINEAGE_COLUMNS]
    copy = sql.SQL("copy {} ({}) from stdin (format binary)").format(
        table.ident, sql.SQL(", ").join(sql.Identifier(c.name) for c in target)
    )
    head, tail = pa.scalar(len(target).to_bytes(2, "big")), pa.scalar(_lineage_bytes(conn, lineage))
    hash_length = pa.scalar((32).to_bytes(4, "big"))
    sort_keys = [("k", "ascending", "at_end"), ("h", "ascending", "at_end")] if key else [("h", "ascending", "at_end")]
    integer = watermark is not None and _is_integer(table, watermark)
    loaded, ids, newest, next_report = 0, [], [], 100_000
    for chunk in _stage_chunks(batches):
        batch = pa.concat_batches(list(chunk) or [pa.record_batch([])])
        progress.rows += batch.num_rows
        if not batch.num_rows:
            continue
        _check_arrow_columns(batch, table.columns)
        fields = pc.binary_join_element_wise(*_arrow_field_parts(batch, table.columns), b"")
        hashes = pa.array([hashlib.md5(f).hexdigest() for f in fields.to_pylist()], pa.string())
        keys = pa.table({"h": hashes, **({"k": batch.column(key)} if key else {})})
        order = pc.sort_indices(keys, sort_keys=sort_keys)
        in_order = hashes.take(order)
        order = order.filter(pa.concat_arrays([pa.array([True]), pc.not_equal(in_order[1:], in_order[:-1])]))
        new = np.ones(len(order), dtype=bool)
        ordered_keys = batch.column(key).take(order) if key else None
        asked = np.flatnonzero(_may_be_held(conn, table, key, ordered_keys if key else order))
        if len(asked):
            probe_rows = pa.record_batch(
                {"i": pa.array(asked.astype(np.int32)), "h": hashes.take(order.take(asked))}
                | ({key: ordered_keys.take(asked)} if key else {})
            )
            _copy(conn, table, probe, probe_columns, [probe_rows], (), _Progress(), lambda _msg: None)
            new[[i for (i,) in conn.execute(held)]] = False
            conn.execute(sql.SQL("truncate {}").format(probe))
        order = order.filter(pa.array(new))
        if len(order):
            rows = pc.binary_join_element_wise(
                head, fields.take(order), hash_length, hashes.take(order).cast(pa.binary()), tail, b""
            )
            with conn.cursor().copy(copy) as out:
                out.write(COPY_SIGNATURE)
                out.write(_joined(rows))
                out.write(COPY_TRAILER)
        loaded += len(order)
        if watermark:
            newest.append(pc.max(batch.column(watermark)).as_py())
            if integer and len(order):
                low_high = pc.min_max(batch.column(watermark).take(order))
                ids += [v for v in (low_high["min"].as_py(), low_high["max"].as_py()) if v is not None]
        if progress.rows >= next_report:
            log(f"{table.qualified_name}: {progress.rows:,} rows read, {loaded:,} new versions")
            next_report = (progress.rows // 100_000 + 1) * 100_000
    conn.execute("reset enable_hashjoin; reset enable_mergejoin")
    newest = [n for n in newest if n is not None]
    return loaded, (min(ids, default=None), max(ids, default=None)), max(newest, default=None)


def _may_be_held(conn, table: BronzeTable, key: str | None, values):
    """Which of a chunk's rows the version index must be asked about (a numpy mask): those whose
    partition value lies between the lowest and highest value bronze holds within the chunk's own
    range (two index lookups), and those without one. A load of days bronze has not seen yet, the
    usual case and every first backfill, asks about none. A table without partitions is asked
    about every row unless it is empty."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not key:
        held_any = conn.execute(sql.SQL("select exists (select from {})").format(table.ident)).fetchone()[0]
        return np.full(len(values), held_any)
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    held_low, held_high = None, None
    if low is not None:
        held_low, held_high = conn.execute(
            sql.SQL("select min({k}), max({k}) from {t} where {k} >= %s and {k} <= %s").format(
                k=sql.Identifier(key), t=table.ident
            ),
            (low, high),
        ).fetchone()
    mask = values.is_null()
    if held_low is not None:
        inside = pc.and_(
            pc.greater_equal(values, pa.scalar(held_low, values.type)),
            pc.less_equal(values, pa.scalar(held_high, values.type)),
        )
        mask = pc.or_(mask, pc.fill_null(inside, False))
    return mask.to_numpy(zero_copy_only=False)


def _stage_chunks(batches) -> Iterator[Iterator]:
    """`batches` cut into chunks of at least `STAGE_ROWS` rows (the last may hold fewer), each
    staged by its own COPY; a chunk must be consumed whole before the next is asked for. CopyData
    is one binary stream (its header in the first batch, its trailer in the last), so it stays one
    chunk; an empty source is one empty chunk."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None or isinstance(first, CopyData):
        yield itertools.chain([first] if first is not None else [], batches)
        return
    head = [first]

    def chunk() -> Iterator:
        rows, batch = 0, head.pop()
        while batch is not None:
            yield batch
            rows += batch.rows if isinstance(batch, CopyText) else getattr(batch, "num_rows", None) or len(batch)
            if rows >= STAGE_ROWS:
                return
            batch = next(batches, None)

    while head:
        yield chunk()
        following = next(batches, None)
        if following is not None:
            head.append(following)


def missing_versions(conn: psycopg.Connection, table: BronzeTable, batches: Batches) -> tuple[int, int]:
    """How many of the source rows in `batches` are versions the version-keeping `table` does
    not hold: (rows read, rows missing). Stages them like a load does, commits nothing; each row
    is one probe of the version index (in its partition, for a partitioned table)."""
    with conn.transaction(force_rollback=True):
        stage = sql.Identifier("_bronze_stage")
        conn.execute(
            sql.SQL("create temporary table {} (like {} including defaults) on commit drop").format(stage, table.ident)
        )
        progress = _Progress()
        _copy(conn, table, stage, table.columns, batches, (), progress, lambda _msg: None)
        conn.execute("set local enable_hashjoin = off; set local enable_mergejoin = off")  # probes, not joins
        missing = 0
        for kind in _APPEND_KINDS[bool(table.partitions)]:
            staged, probe = _kind_sql(table, kind)
            missing += conn.execute(
                sql.SQL(
                    "select count(*) from (select {names}, {expr} as {h} from {stage} s {staged} offset 0) x"
                    " where not exists (select from {table} b where {probe})"
                ).format(
                    names=sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
                    expr=_row_hash_expr(table, sql.Identifier("s")),
                    h=sql.Identifier(ROW_HASH.name),
                    stage=stage,
                    staged=staged,
                    table=table.ident,
                    probe=probe,
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
    conn, table: BronzeTable, scope: LoadScope, watermark: Watermark, rows_read: int, newest=None
) -> datetime | int | None:
    """Advance the watermark to the newest value this load read (never backwards) and record
    the window read; returns the newest value read (`newest` when the caller saw it: the
    version-keeping append, whose stage is gone)."""
    col = sql.Identifier(watermark.column)
    if not table.keeps_versions:
        newest = conn.execute(
            sql.SQL("select max({}) from {} where ").format(col, table.ident) + scope.where, scope.params
        ).fetchone()[0]
    target = sql.Identifier("last_watermark_id" if _is_integer(table, watermark.column) else "last_watermark_ts")
    read_start, read_end = scope.read_params
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


def last_watermark(conn: psycopg.Connection, watermark: Watermark) -> datetime | int | None:
    """Where the loads of `watermark` stand: the newest value committed (None before the first)."""
    if conn.execute("select to_regclass('bronze.etl_watermarks')").fetchone()[0] is None:
        return None
    row = conn.execute(
        "select last_watermark_ts, last_watermark_id from bronze.etl_watermarks where watermark_key = %s",
        (watermark.key,),
    ).fetchone()
    return None if row is None else (row[0] if row[0] is not None else row[1])


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
