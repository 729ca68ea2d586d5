"""Oracle as a replication source, behind the same `Extractor` interface as PostgreSQL.

UNTESTED AGAINST A LIVE ORACLE: no Oracle server can run on the build machines. The SQL it sends
and the type mapping are unit-tested (tests/test_replication_units.py); the driver calls follow
python-oracledb's documented API (`pip install -e ".[oracle]"`).

- Position: the database's current SCN (`V$DATABASE.CURRENT_SCN`, or DBMS_FLASHBACK when V$ is not
  granted). Every table is read `AS OF SCN` that number, so the copy is the database at that SCN,
  from any session, as long as undo retention covers the load.
- LONG / LONG RAW columns cannot be read in a flashback query. `long_columns` decides:
  `exclude` reads the table without them (recorded as skipped columns), `skip_table` leaves the
  table out of the copy, `error` fails the table with a clear message (the default).
- NUMBER(p,0) becomes int (p <= 9), long (p <= 18) or decimal(p,0); NUMBER(p,s) decimal(p,s);
  a negative scale rounds to 10^-s, so NUMBER(p,-s) is decimal(p+s,0); NUMBER(*,0) (INTEGER) is
  decimal(38,0); a NUMBER without precision has no fixed scale and lands as its exact text.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from dw_platform.replication.extractor import Extractor, Snapshot, SourceTable
from dw_platform.replication.typemap import MAX_DECIMAL_PRECISION, SourceColumn, to_iceberg_array

SYSTEM_SCHEMAS = (
    "SYS",
    "SYSTEM",
    "OUTLN",
    "DBSNMP",
    "APPQOSSYS",
    "AUDSYS",
    "CTXSYS",
    "DVSYS",
    "GSMADMIN_INTERNAL",
    "LBACSYS",
    "MDSYS",
    "OJVMSYS",
    "OLAPSYS",
    "ORDDATA",
    "ORDSYS",
    "WMSYS",
    "XDB",
    "GGSYS",
    "DVF",
    "REMOTE_SCHEDULER_AGENT",
    "ORACLE_OCM",
    "ANONYMOUS",
    "DIP",
    "XS$NULL",
)
LONG_TYPES = ("LONG", "LONG RAW")

CATALOG_QUERY = f"""
select c.owner, c.table_name, c.column_name, c.data_type, c.data_precision, c.data_scale, c.nullable,
       (select k.position from all_constraints p join all_cons_columns k
          on k.owner = p.owner and k.constraint_name = p.constraint_name
        where p.constraint_type = 'P' and p.owner = c.owner and p.table_name = c.table_name
          and k.column_name = c.column_name) as pk_position
from all_tab_columns c
join all_tables t on t.owner = c.owner and t.table_name = c.table_name
where c.owner not in ({", ".join(f"'{s}'" for s in SYSTEM_SCHEMAS)})
  and t.temporary = 'N' and t.nested = 'NO'
order by c.owner, c.table_name, c.column_id
"""
CURRENT_SCN_QUERIES = ("select current_scn from v$database", "select dbms_flashback.get_system_change_number from dual")


def oracle_column(
    name: str, data_type: str, precision: int | None, scale: int | None, nullable: bool = True
) -> SourceColumn:
    """Map an ALL_TAB_COLUMNS row to an Iceberg kind."""
    base = re.sub(r"\(\d+\)", "", data_type)  # TIMESTAMP(6) WITH TIME ZONE -> TIMESTAMP WITH TIME ZONE
    shown = _display_type(data_type, precision, scale)
    if base == "NUMBER":
        if precision is None:
            if scale == 0:  # NUMBER(*,0), INTEGER
                return SourceColumn(name, shown, "decimal", nullable, MAX_DECIMAL_PRECISION, 0)
            return SourceColumn(name, shown, "string", nullable)
        scale = scale or 0
        if scale < 0:
            precision, scale = min(precision - scale, MAX_DECIMAL_PRECISION), 0
        if scale == 0 and precision <= 9:
            return SourceColumn(name, shown, "int", nullable)
        if scale == 0 and precision <= 18:
            return SourceColumn(name, shown, "long", nullable)
        if precision <= MAX_DECIMAL_PRECISION and scale <= precision:
            return SourceColumn(name, shown, "decimal", nullable, precision, scale)
        return SourceColumn(name, shown, "string", nullable)
    kind = {
        "BINARY_FLOAT": "float",
        "BINARY_DOUBLE": "double",
        "FLOAT": "double",
        "DATE": "timestamp",
        "TIMESTAMP": "timestamp",
        "TIMESTAMP WITH TIME ZONE": "timestamptz",
        "TIMESTAMP WITH LOCAL TIME ZONE": "timestamptz",
        "RAW": "binary",
        "BLOB": "binary",
        "LONG RAW": "binary",
    }.get(base, "string")  # VARCHAR2, NVARCHAR2, CHAR, NCHAR, CLOB, NCLOB, LONG, ROWID, INTERVAL ..., XMLTYPE
    return SourceColumn(name, shown, kind, nullable)


def _display_type(data_type: str, precision: int | None, scale: int | None) -> str:
    if data_type != "NUMBER" or (precision is None and scale is None):
        return data_type
    return f"NUMBER({'*' if precision is None else precision},{scale or 0})"


def tables_from_catalog(rows, long_columns: str = "error") -> tuple[list[SourceTable], dict[str, str]]:
    """SourceTables from CATALOG_QUERY rows, the LONG policy applied; also {table key: why skipped}."""
    grouped: dict[tuple[str, str], list] = {}
    for row in rows:
        grouped.setdefault((row[0], row[1]), []).append(row)
    tables, skipped = [], {}
    for (owner, name), columns in grouped.items():
        longs = [c[2] for c in columns if c[3] in LONG_TYPES]
        key = f"{owner}.{name}"
        if longs and long_columns == "skip_table":
            skipped[key] = f"LONG column(s) {', '.join(longs)} cannot be read AS OF SCN (long_columns: skip_table)"
            continue
        kept = [c for c in columns if not (longs and long_columns == "exclude" and c[3] in LONG_TYPES)]
        pk = tuple(c[2] for c in sorted((c for c in columns if c[7] is not None), key=lambda c: c[7]))
        tables.append(
            SourceTable(
                owner,
                name,
                tuple(oracle_column(c[2], c[3], c[4], c[5], c[6] == "Y") for c in kept),
                pk,
                skipped_columns=tuple(longs) if long_columns == "exclude" else (),
            )
        )
    return tables, skipped


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def select_as_of_scn(table: SourceTable) -> str:
    """The bulk read of one table at the snapshot's SCN (bind variable :scn)."""
    columns = ", ".join(quote(c.name) for c in table.columns)
    return f"select {columns} from {quote(table.schema)}.{quote(table.name)} as of scn :scn"


class OracleExtractor(Extractor):
    engine = "oracle"
    batch_rows = 100_000

    def connect(self):
        import oracledb  # optional dependency: pip install -e ".[oracle]"

        return oracledb.connect(self.source.url)

    def discover(self) -> list[SourceTable]:
        tables = self._catalog()
        return [t for t in tables if self.source.selects(t.schema, t.name)]

    def _catalog(self, only: tuple[str, str] | None = None) -> list[SourceTable]:
        query, params = CATALOG_QUERY, {}
        if only:
            query = query.replace("order by", "and c.owner = :owner and c.table_name = :name\norder by")
            params = {"owner": only[0], "name": only[1]}
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(query, params)
            tables, skipped = tables_from_catalog(cur.fetchall(), self.source.long_columns)
        if only and skipped:
            raise LookupError(next(iter(skipped.values())))
        return tables

    @contextmanager
    def snapshot(self):
        with self.connect() as conn, conn.cursor() as cur:
            for query in CURRENT_SCN_QUERIES:
                try:
                    cur.execute(query)
                    scn = cur.fetchone()[0]
                    break
                except Exception:  # not granted: try the next way
                    continue
            else:
                raise RuntimeError(
                    "cannot read the current SCN: grant SELECT on V_$DATABASE or EXECUTE on DBMS_FLASHBACK"
                )
        yield Snapshot(position=str(scn), kind="scn")

    def read(self, snapshot: Snapshot, schema: str, name: str):
        found = self._catalog(only=(schema, name))
        if not found:
            raise LookupError(f"table {schema}.{name} does not exist on the source")
        table = found[0]
        longs = [c.name for c in table.columns if c.source_type in LONG_TYPES]
        if longs and self.source.long_columns == "error":
            raise ValueError(
                f"{table.key} has LONG column(s) {', '.join(longs)}, which cannot be read AS OF SCN; "
                "set long_columns to exclude or skip_table for this source"
            )
        return table, self._batches(table, snapshot)

    def _batches(self, table: SourceTable, snapshot: Snapshot):
        import pyarrow as pa

        with self.connect() as conn:
            for frame in conn.fetch_df_batches(
                select_as_of_scn(table), parameters={"scn": int(snapshot.position)}, size=self.batch_rows
            ):
                batch = pa.table(frame)
                arrays = [to_iceberg_array(batch.column(i), c) for i, c in enumerate(table.columns)]
                yield from pa.Table.from_arrays(arrays, names=[c.name for c in table.columns]).to_batches()
