"""PostgreSQL as a replication source: catalog discovery, the slot's exported snapshot, and
columnar reads through ADBC's PostgreSQL driver (binary COPY straight into Arrow batches).

The snapshot: `CREATE_REPLICATION_SLOT ... LOGICAL pgoutput (SNAPSHOT 'export')` on a replication
connection returns the slot's consistent LSN and the name of a snapshot that sees exactly the
transactions committed before it. Every table is then read in a transaction that imports that
snapshot (`SET TRANSACTION SNAPSHOT`), so the copy equals the database at that LSN and the slot
streams precisely the changes after it. The exported snapshot lives as long as the replication
connection stays open and idle: `snapshot()` holds it for the duration of the `with` block.

The first bulk load creates the source's permanent slot (and the publication before it: pgoutput
can only decode changes made after its publication exists). Later loads (a failed table's retry
in a new run, a full reload, a new table) cannot re-export from an existing slot; they use a
TEMPORARY slot of their own, whose consistent LSN becomes the start position of the tables they
read. Changes up to that LSN are already in the copy and are skipped when applied (part 2).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from dw_platform.replication.extractor import Extractor, Snapshot, SourceTable
from dw_platform.replication.typemap import SourceColumn, postgres_column, to_iceberg_array

# One row per column of every ordinary or partitioned table outside the system schemas (partitions
# are read through their root, so they are left out).
CATALOG_QUERY = """
select n.nspname::text as schema_name, c.relname::text as table_name, c.relreplident::text as identity,
       a.attname::text as column_name, format_type(a.atttypid, a.atttypmod) as source_type,
       coalesce(bt.typname, t.typname)::text as base_type,
       case when t.typtype = 'd' then t.typtypmod else a.atttypmod end as typmod,
       coalesce(bt.typcategory, t.typcategory)::text as category,
       not a.attnotnull as nullable, t.typtype = 'd' as is_domain,
       array_position(i.indkey::int2[], a.attnum) as pk_position
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_type t on t.oid = a.atttypid
left join pg_type bt on t.typtype = 'd' and bt.oid = t.typbasetype
left join pg_index i on i.indrelid = c.oid and i.indisprimary
where c.relkind in ('r', 'p') and not c.relispartition
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
  {only}
order by n.nspname, c.relname, a.attnum
"""


# Settings that fix how values print as text (values read as text, and pgoutput's output), so the
# bulk load and change data capture give the same text for the same value whatever the server's defaults.
TEXT_OUTPUT_SETTINGS = {
    "timezone": "UTC",
    "datestyle": "ISO, MDY",
    "intervalstyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


def tables_from_catalog(rows) -> list[SourceTable]:
    """SourceTables from CATALOG_QUERY rows (in its order)."""
    tables: dict[tuple[str, str], dict] = {}
    for schema, name, identity, column, source_type, base, typmod, category, nullable, domain, pk_pos in rows:
        entry = tables.setdefault((schema, name), {"identity": identity, "columns": [], "pk": []})
        entry["columns"].append(postgres_column(column, source_type, base, typmod, category, nullable, domain))
        if pk_pos is not None:
            entry["pk"].append((pk_pos, column))
    return [
        SourceTable(schema, name, tuple(e["columns"]), tuple(c for _, c in sorted(e["pk"])), e["identity"])
        for (schema, name), e in tables.items()
    ]


def select_statement(table: SourceTable) -> str:
    """The bulk read: every column, cast where the Arrow path needs it (see typemap). Columns read
    as text go through their type's output function (concat() calls it), which is the text pgoutput
    sends; a `::text` cast would differ for some types (inet shows its netmask, bool spells true)."""
    exprs = []
    for c in table.columns:
        ident = sql.Identifier(c.name).as_string(None)
        if c.read_as == "text":
            exprs.append(f"case when {ident} is not null then concat({ident}) end as {ident}")
        else:
            exprs.append(f"{ident}::{c.read_as} as {ident}" if c.read_as else ident)
    return f"select {', '.join(exprs)} from {sql.Identifier(table.schema, table.name).as_string(None)}"


def lsn_to_int(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class PostgresExtractor(Extractor):
    engine = "postgresql"

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.source.url, autocommit=True, application_name="dw_platform_replication", **kwargs)

    def discover(self) -> list[SourceTable]:
        with self.connect() as conn:
            rows = conn.execute(CATALOG_QUERY.format(only="")).fetchall()
        return [t for t in tables_from_catalog(rows) if self.source.selects(t.schema, t.name)]

    def prepare(self, tables: list[SourceTable], log) -> None:
        """With `tables_without_primary_key: full`, give every selected table without a primary key
        REPLICA IDENTITY FULL, so its updates and deletes carry the whole old row (and, in a
        publication of all tables, are allowed on the source at all)."""
        if self.source.tables_without_primary_key != "full":
            return
        todo = [t for t in tables if not t.primary_key and t.replica_identity in ("d", "n")]
        with self.connect() as conn:
            for t in todo:
                statement = sql.SQL("alter table {} replica identity full").format(sql.Identifier(t.schema, t.name))
                try:
                    conn.execute(statement)
                except psycopg.errors.InsufficientPrivilege:
                    raise RuntimeError(
                        f"{t.key} has no primary key and its replica identity is not FULL, and the replication "
                        f"role may not change it (only the table's owner may): ask the DBA to run "
                        f"`{statement.as_string(conn)}`, or set tables_without_primary_key: skip"
                    ) from None
                log(f"{t.key} has no primary key: set REPLICA IDENTITY FULL (its changes apply by whole row)")

    def slot_exists(self) -> bool:
        with self.connect() as conn:
            return (
                conn.execute("select 1 from pg_replication_slots where slot_name = %s", (self.source.slot,)).fetchone()
                is not None
            )

    def drop_slot(self) -> None:
        """Drop the source's slot (an unusable one, before a re-seed makes it again)."""
        with self.connect() as conn:
            conn.execute("select pg_drop_replication_slot(%s)", (self.source.slot,))

    def ensure_publication(self) -> None:
        with self.connect() as conn:
            if conn.execute("select 1 from pg_publication where pubname = %s", (self.source.publication,)).fetchone():
                return
            if self.source.publication_mode == "existing":
                raise RuntimeError(
                    f"publication {self.source.publication!r} does not exist on the source "
                    "(publication_mode: existing): ask the DBA to create it"
                )
            statement = sql.SQL("create publication {} for all tables with (publish_via_partition_root = true)").format(
                sql.Identifier(self.source.publication)
            )
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                raise RuntimeError(
                    f"publication {self.source.publication!r} does not exist on the source and the replication "
                    f"role may not create it (a publication of all tables needs a superuser): ask the DBA to run "
                    f"`{statement.as_string(conn)}`"
                ) from None

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """The source's slot created with an exported snapshot (first load), else a temporary slot's."""
        permanent = not self.slot_exists()
        if permanent:
            self.ensure_publication()
        name = self.source.slot if permanent else f"dw_tmp_{uuid.uuid4().hex[:12]}"
        # Replication commands need the simple query protocol: PQexec through pgconn.exec_.
        with self.connect(replication="database") as conn:
            command = (
                f"CREATE_REPLICATION_SLOT {sql.Identifier(name).as_string(conn)} "
                f"{'' if permanent else 'TEMPORARY '}LOGICAL pgoutput (SNAPSHOT 'export')"
            )
            result = conn.pgconn.exec_(command.encode())
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                raise RuntimeError(
                    f"could not create replication slot {name}: {result.error_message.decode(errors='replace').strip()}"
                )
            lsn, snapshot_name = result.get_value(0, 1).decode(), result.get_value(0, 2).decode()
            yield Snapshot(position=lsn, kind="slot" if permanent else "temporary", token=snapshot_name)

    def read(self, snapshot: Snapshot | None, schema: str, name: str):
        """`snapshot` None reads the table as it is now (the checks' comparisons)."""
        import adbc_driver_postgresql.dbapi as adbc

        conn = adbc.connect(self.source.url, autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute("begin isolation level repeatable read read only")
            if snapshot is not None:
                cur.execute(f"set transaction snapshot {sql.quote(snapshot.token)}")
            cur.execute(f"set local lock_timeout = {int(self.source.lock_timeout_s * 1000)}")
            for setting, value in TEXT_OUTPUT_SETTINGS.items():
                cur.execute(f"set local {setting} = {sql.quote(value)}")
            only = f"and n.nspname = {sql.quote(schema)} and c.relname = {sql.quote(name)}"
            cur.execute(CATALOG_QUERY.format(only=only))
            rows = [tuple(r.values()) for r in cur.fetch_arrow_table().to_pylist()]
            found = tables_from_catalog(rows)
            if not found:
                at = f" at LSN {snapshot.position}" if snapshot else ""
                raise LookupError(f"table {schema}.{name} does not exist on the source{at}")
            table = found[0]
            cur.execute(select_statement(table))
            reader = cur.fetch_record_batch()
        except BaseException:
            conn.close()
            raise
        return table, _batches(conn, cur, reader, table.columns)


def _batches(conn, cur, reader, columns: tuple[SourceColumn, ...]):
    """The reader's batches with each column cast to its Iceberg Arrow type; closes the connection."""
    import pyarrow as pa

    try:
        for batch in reader:
            arrays = [to_iceberg_array(batch.column(i), c) for i, c in enumerate(columns)]
            yield pa.RecordBatch.from_arrays(arrays, names=[c.name for c in columns])
        cur.execute("commit")
    finally:
        conn.close()
