"""Replicated tables in the Iceberg lakehouse: their schema (source columns + lineage columns),
its evolution when the source changes, and a streaming replace of a table's data.

Lineage columns on every row: `_cdc_op` (r = read in a bulk snapshot, c/u = written by a change),
`_cdc_lsn` (the log position the row is as of: the bulk load's start LSN / SCN, or the change's
commit LSN), `_bronze_load_ts`, `_bronze_batch_id`, `_bronze_source_file` (`<source>:<schema.table>`).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dw_platform.lib.lakehouse import TIDY_METADATA
from dw_platform.replication.extractor import SourceTable
from dw_platform.replication.typemap import SourceColumn, iceberg_type, same_iceberg_type, widens

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
    # zstd level 1: as small as the default level here, at about half the CPU time.
    return {
        "format-version": "2",
        "write.target-file-size-bytes": str(file_size_mb << 20),
        "write.parquet.compression-codec": "zstd",
        "write.parquet.compression-level": "1",
        **TIDY_METADATA,
    }


def keep_properties(tx: Transaction, file_size_mb: int) -> None:
    """Bring the table's write properties in line with the source's settings (they may have changed)."""
    wanted = {k: v for k, v in table_properties(file_size_mb).items() if k != "format-version"}
    if any(tx.table_metadata.properties.get(k) != v for k, v in wanted.items()):
        tx.set_properties(wanted)


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


def load_or_create(
    catalog: Catalog, namespace: tuple[str, ...], table: SourceTable, file_size_mb: int
) -> tuple[Table, bool]:
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
        old = column_of(field)
        if not same_iceberg_type(old, column):
            (widened if widens(old, column) else replaced).append(column)
    names = {c.name for c in table.columns}
    removed = tuple(n for n in existing if n not in names) if drop_removed else ()
    current_key = tuple(current.find_column_name(i) for i in current.identifier_field_ids)
    key = table.primary_key if set(current_key) != set(table.primary_key) else None
    return Evolution(tuple(added), removed, tuple(widened), tuple(replaced), key)


def column_of(field) -> SourceColumn:
    """The kind (and decimal precision/scale) of an Iceberg field."""
    from pyiceberg import types as t

    kind = {
        t.IntegerType: "int",
        t.LongType: "long",
        t.FloatType: "float",
        t.DoubleType: "double",
        t.BooleanType: "boolean",
        t.StringType: "string",
        t.DateType: "date",
        t.TimestampType: "timestamp",
        t.TimestamptzType: "timestamptz",
        t.TimeType: "time",
        t.BinaryType: "binary",
    }.get(type(field.field_type))
    if isinstance(field.field_type, t.DecimalType):
        return SourceColumn(
            field.name, "", "decimal", precision=field.field_type.precision, scale=field.field_type.scale
        )
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


def with_lineage(
    batch: pa.RecordBatch,
    layout: BatchLayout,
    op: str | list[str],
    lsn: int | list[int],
    load_ts: datetime,
    batch_id: str,
    source_file: str,
) -> pa.RecordBatch:
    """`batch` (source columns, by name) laid out for the table's data files: lineage columns
    filled (`op` and `lsn` one value for all rows or one per row), table columns the batch lacks
    (dropped at the source) null."""
    import pyarrow as pa

    n = batch.num_rows
    lineage = {
        "_cdc_op": op,
        "_cdc_lsn": lsn,
        "_bronze_load_ts": load_ts,
        "_bronze_batch_id": batch_id,
        "_bronze_source_file": source_file,
    }
    arrays = []
    for name, field in zip(layout.names, layout.schema):
        if name in lineage:
            value = lineage[name]
            arrays.append(pa.array(value, field.type) if isinstance(value, list) else constant(value, n, field.type))
        elif name in batch.schema.names:
            column = batch.column(name)
            arrays.append(column if column.type == field.type else column.cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=layout.schema)


def constant(value, n: int, type_: pa.DataType) -> pa.Array:
    """`n` copies of `value`; a string one built from its buffers (pa.repeat copies value by value)."""
    import numpy as np
    import pyarrow as pa

    if pa.types.is_large_string(type_) and value:
        data = value.encode()
        offsets = np.arange(0, (n + 1) * len(data), len(data), dtype=np.int64)
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))
    return pa.repeat(pa.scalar(value, type_), n)


def file_schema(tx: Transaction) -> Schema:
    """The schema data files are written with: the table's, with names Parquet cannot hold
    sanitized (same fields, same order, same ids)."""
    from pyiceberg.schema import sanitize_column_names

    return sanitize_column_names(tx.table_metadata.schema())


@dataclass(frozen=True)
class BatchLayout:
    """How to build a batch for `write_files`: the table's column names, in order, and the Arrow
    schema of its data files (field ids, possibly sanitized names)."""

    names: tuple[str, ...]
    schema: pa.Schema

    @classmethod
    def of(cls, tx: Transaction) -> BatchLayout:
        return cls(tuple(f.name for f in tx.table_metadata.schema().fields), arrow_schema(file_schema(tx)))


def write_files(tx: Transaction, table: Table, batches: Iterable[pa.RecordBatch], append) -> Iterator[int]:
    """Stream `batches` (laid out by `BatchLayout.of(tx)`) into Parquet data files and add each to the
    snapshot producer `append`; yields the rows of each file.

    Each batch is written as it arrives (one row group per batch); a file is closed once the
    batches written to it reach the table's target size (`write.target-file-size-bytes`, counted in
    Arrow bytes as pyiceberg does). Memory holds one batch, whatever the size of files or table
    (pyiceberg's own `append` buffers a whole file first, and its thread pool reads ahead).
    """
    import pyarrow as pa
    from pyiceberg.io.pyarrow import ParquetFormatWriter
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.table import TableProperties, WriteTask
    from pyiceberg.table.locations import load_location_provider
    from pyiceberg.typedef import Record

    metadata = tx.table_metadata
    schema = file_schema(tx)
    target = int(
        metadata.properties.get(
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
        )
    )
    locations = load_location_provider(table_location=metadata.location, table_properties=metadata.properties)
    counter, write_uuid = itertools.count(), uuid.uuid4()  # file names unique per call, not per snapshot
    writer = output = path = None
    rows = size = 0

    def finish() -> None:
        stats = writer.close()
        append.append_data_file(
            DataFile.from_args(
                content=DataFileContent.DATA,
                file_path=path,
                file_format=FileFormat.PARQUET,
                partition=Record(),
                file_size_in_bytes=len(output),
                sort_order_id=None,
                spec_id=metadata.default_spec_id,
                equality_ids=None,
                key_metadata=None,
                **stats.to_serialized_dict(),
            )
        )

    for batch in batches:
        if writer is None:
            task = WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=[], schema=schema)
            path = locations.new_data_location(task.generate_data_file_filename("parquet"))
            output = table.io.new_output(path)
            writer = ParquetFormatWriter(output, schema, metadata.properties)
        writer.write(pa.Table.from_batches([batch]))
        rows += batch.num_rows
        size += batch.nbytes
        if size >= target:
            finish()
            yield rows
            writer, rows, size = None, 0, 0
    if writer is not None:
        finish()
        yield rows


def key_bounds(keys: pa.Table):
    """An Iceberg filter on each key column's range in `keys`: cheap to evaluate against file
    statistics (unlike an `In` over thousands of values, which pyiceberg binds value by value)."""
    import pyarrow.compute as pc
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    terms = []
    for name in keys.column_names:
        low, high = pc.min_max(keys.column(name)).values()
        terms += [GreaterThanOrEqual(name, low.as_py()), LessThanOrEqual(name, high.as_py())]
    return And(*terms)


def key_mask(data: pa.Table, keys: pa.Table):
    """A boolean mask of the rows of `data` whose key (the columns of `keys`) is in `keys`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = keys.column_names
    if len(names) == 1:
        return pc.is_in(data.column(names[0]), value_set=keys.column(names[0]).combine_chunks())
    numbered = data.select(names).append_column("__row", pa.array(range(data.num_rows), pa.int64()))
    found = numbered.join(keys, keys=names, join_type="left semi").column("__row")
    return pc.is_in(numbered.column("__row"), value_set=found.combine_chunks())


def rows_with_keys(table: Table, keys: pa.Table) -> pa.Table:
    """The table's current rows whose key is in `keys`."""
    data = table.scan(row_filter=key_bounds(keys)).to_arrow()
    return data.filter(key_mask(data, keys)) if data.num_rows else data


def replace_by_key(
    tx: Transaction, table: Table, keys: pa.Table, batches: list[pa.RecordBatch], properties: dict[str, str]
) -> int:
    """In one OVERWRITE snapshot of `tx`: remove the rows whose key is in `keys` and add `batches`.
    Copy-on-write: a data file whose key statistics overlap `keys` is read, and if it holds any of
    them it is replaced by a file without them. Returns the rows removed."""
    import pyarrow.compute as pc
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    removed = 0
    layout = BatchLayout.of(tx)
    with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
        if keys.num_rows and has_rows(tx):
            bounds = key_bounds(keys)
            overwrite.delete_by_predicate(bounds)
            reader = ArrowScan(tx.table_metadata, table.io, tx.table_metadata.schema(), AlwaysTrue())
            for task in table.scan(row_filter=bounds).plan_files():
                data = reader.to_table([task])
                hit = key_mask(data, keys)
                hits = pc.sum(hit).as_py() or 0
                if not hits:
                    continue
                overwrite.delete_data_file(task.file)
                removed += hits
                kept = data.filter(pc.invert(hit))
                if kept.num_rows:
                    for _ in write_files(tx, table, in_layout(kept, layout), overwrite):
                        pass
        for _ in write_files(tx, table, batches, overwrite):
            pass
    return removed


def in_layout(data: pa.Table, layout: BatchLayout) -> list[pa.RecordBatch]:
    """Rows read from the table (by column name) as batches in its data-file layout."""
    import pyarrow as pa

    columns = [data.column(n).cast(f.type) for n, f in zip(layout.names, layout.schema)]
    return pa.Table.from_arrays(columns, schema=layout.schema).to_batches()


def summary_value(snapshot, key: str, default=None):
    """A snapshot summary property (`default` when there is no snapshot or no such property)."""
    value = snapshot.summary[key] if snapshot is not None and snapshot.summary is not None else None
    return default if value is None else value


def has_rows(tx: Transaction) -> bool:
    return int(summary_value(tx.table_metadata.current_snapshot(), "total-records", 0)) > 0
