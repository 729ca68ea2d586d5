"""Replicated tables in the Iceberg lakehouse: their schema (source columns + lineage columns),
its evolution when the source changes, and a streaming replace of a table's data.

Lineage columns on every row: `_cdc_op` (r = read in a bulk snapshot, c/u = written by a change),
`_cdc_lsn` (the log position the row is as of: the bulk load's start LSN / SCN, or the change's
commit LSN), `_bronze_load_ts`, `_bronze_batch_id`, `_bronze_source_file` (`<source>:<schema.table>`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dw_platform.defs.replication.extractor import SourceTable
from dw_platform.defs.replication.typemap import SourceColumn, iceberg_type, same_iceberg_type, widens
from dw_platform.lib.lakehouse import TIDY_METADATA

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table, Transaction

LINEAGE_COLUMNS = (
    SourceColumn("_cdc_op", "lineage", "string"),
    SourceColumn("_cdc_lsn", "lineage", "long"),
    SourceColumn("_bronze_load_ts", "lineage", "timestamptz"),
    SourceColumn("_bronze_batch_id", "lineage", "string"),
    SourceColumn("_bronze_source_file", "lineage", "string"),
)
LINEAGE_NAMES = tuple(c.name for c in LINEAGE_COLUMNS)


def table_properties(file_size_mb: int) -> dict[str, str]:
    return {"format-version": "2", "write.target-file-size-bytes": str(file_size_mb << 20), **TIDY_METADATA}


def iceberg_schema(table: SourceTable) -> Schema:
    """The Iceberg schema of a replicated table; primary key columns are its identifier fields."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField

    fields = []
    for i, column in enumerate((*table.columns, *LINEAGE_COLUMNS), start=1):
        key = column.name in table.primary_key
        fields.append(NestedField(i, column.name, iceberg_type(column), required=key))
    key_ids = [i for i, c in enumerate(table.columns, start=1) if c.name in table.primary_key]
    return Schema(*fields, identifier_field_ids=key_ids)


def ensure_namespace(catalog: Catalog, namespace: tuple[str, ...]) -> None:
    from pyiceberg.exceptions import NamespaceAlreadyExistsError

    for depth in range(1, len(namespace) + 1):
        try:
            catalog.create_namespace_if_not_exists(namespace[:depth])
        except NamespaceAlreadyExistsError:  # created by a concurrent worker
            pass


def load_or_create(catalog: Catalog, namespace: tuple[str, ...], table: SourceTable, file_size_mb: int) -> tuple[Table, bool]:
    """The table's Iceberg table, created (empty) if missing; True when created now."""
    from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError

    identifier = (*namespace, table.iceberg_name)
    try:
        return catalog.load_table(identifier), False
    except NoSuchTableError:
        pass
    ensure_namespace(catalog, namespace)
    try:
        return catalog.create_table(identifier, iceberg_schema(table), properties=table_properties(file_size_mb)), True
    except TableAlreadyExistsError:
        return catalog.load_table(identifier), False


@dataclass(frozen=True)
class Evolution:
    """How a table's Iceberg schema must change to hold `table`'s current columns."""

    added: tuple[SourceColumn, ...] = ()
    removed: tuple[str, ...] = ()
    widened: tuple[SourceColumn, ...] = ()
    replaced: tuple[SourceColumn, ...] = ()  # incompatible type: dropped and added again (new field id)
    key: tuple[str, ...] | None = None  # new identifier fields, when the primary key changed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.widened or self.replaced or self.key is not None)


def plan_evolution(current: Schema, table: SourceTable, drop_removed: bool = True) -> Evolution:
    """Compare the Iceberg schema with the source table (lineage columns stay as they are)."""
    existing = {f.name: f for f in current.fields if f.name not in LINEAGE_NAMES}
    added, widened, replaced = [], [], []
    for column in table.columns:
        field = existing.get(column.name)
        if field is None:
            added.append(column)
            continue
        old = _column_of(field)
        if not same_iceberg_type(old, column):
            (widened if widens(old, column) else replaced).append(column)
    names = {c.name for c in table.columns}
    removed = tuple(n for n in existing if n not in names) if drop_removed else ()
    current_key = tuple(current.find_column_name(i) for i in current.identifier_field_ids)
    key = table.primary_key if set(current_key) != set(table.primary_key) else None
    return Evolution(tuple(added), removed, tuple(widened), tuple(replaced), key)


def _column_of(field) -> SourceColumn:
    from pyiceberg import types as t

    kind = {t.IntegerType: "int", t.LongType: "long", t.FloatType: "float", t.DoubleType: "double",
            t.BooleanType: "boolean", t.StringType: "string", t.DateType: "date", t.TimestampType: "timestamp",
            t.TimestamptzType: "timestamptz", t.TimeType: "time", t.BinaryType: "binary"}.get(type(field.field_type))
    if isinstance(field.field_type, t.DecimalType):
        return SourceColumn(field.name, "", "decimal", precision=field.field_type.precision, scale=field.field_type.scale)
    return SourceColumn(field.name, "", kind or "string")


def evolve(tx: Transaction, evolution: Evolution) -> None:
    """Apply `evolution` inside `tx` (new and replaced columns are optional)."""
    from pyiceberg.types import PrimitiveType

    if not evolution:
        return
    with tx.update_schema(allow_incompatible_changes=True) as update:
        if evolution.key is not None:
            update.set_identifier_fields()  # re-set below, once the columns exist
        for name in (*evolution.removed, *(c.name for c in evolution.replaced)):
            update.delete_column(name)
        for column in evolution.widened:
            update.update_column(column.name, field_type=iceberg_type(column))
    if evolution.added or evolution.replaced or evolution.key is not None:
        with tx.update_schema(allow_incompatible_changes=True) as update:
            for column in (*evolution.added, *evolution.replaced):
                kind: PrimitiveType = iceberg_type(column)
                update.add_column(column.name, kind, required=False)
            if evolution.key:
                update.set_identifier_fields(*evolution.key)


def arrow_schema(schema: Schema) -> pa.Schema:
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    return schema_to_pyarrow(schema, include_field_ids=True)


def with_lineage(batch: pa.RecordBatch, schema: pa.Schema, op: str, lsn: int, load_ts: datetime,
                 batch_id: str, source_file: str) -> pa.RecordBatch:
    """`batch` (source columns, named) laid out as `schema`: lineage columns filled, columns the
    source batch does not have (dropped at the source) null."""
    import pyarrow as pa

    n = batch.num_rows
    lineage = {"_cdc_op": op, "_cdc_lsn": lsn, "_bronze_load_ts": load_ts, "_bronze_batch_id": batch_id,
               "_bronze_source_file": source_file}
    arrays = []
    for field in schema:
        if field.name in lineage:
            arrays.append(pa.repeat(pa.scalar(lineage[field.name], field.type), n))
        elif field.name in batch.schema.names:
            column = batch.column(field.name)
            arrays.append(column if column.type == field.type else column.cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_files(tx: Transaction, table: Table, batches: Iterable[pa.RecordBatch], append) -> Iterator[int]:
    """Write `batches` as Parquet data files of about the table's target size, one at a time
    (memory stays at one file's batches), adding each to the snapshot producer `append`;
    yields the rows of each file written."""
    from pyiceberg.io.pyarrow import bin_pack_record_batches, write_file
    from pyiceberg.table import TableProperties, WriteTask

    target = int(tx.table_metadata.properties.get(TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                                                 TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT))
    counter = itertools.count()
    schema = tx.table_metadata.schema()
    for group in bin_pack_record_batches(batches, target):
        task = WriteTask(write_uuid=append.commit_uuid, task_id=next(counter), record_batches=group, schema=schema)
        for data_file in write_file(table.io, tx.table_metadata, iter([task])):
            append.append_data_file(data_file)
        yield sum(b.num_rows for b in group)


def has_rows(tx: Transaction) -> bool:
    snapshot = tx.table_metadata.current_snapshot()
    return snapshot is not None and int((snapshot.summary or {}).get("total-records", 0) or 0) > 0
