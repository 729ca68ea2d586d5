"""Source column types -> Iceberg types, and the two ways values reach them as Arrow arrays:

- bulk loads read Arrow batches (ADBC); `to_iceberg_array` casts each column to its Iceberg type
  (numeric arrives as text and becomes a decimal here);
- change data capture receives PostgreSQL's text output (pgoutput); `text_to_iceberg_array` parses it.

Both paths must give the same value for the same source value; tests round-trip every kind.
Kinds an Iceberg type holds exactly are kept (decimals stay decimals, timestamptz stays UTC, bytea
is binary); jsonb, arrays, uuid, intervals, enums and every other type land as their text form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.types import IcebergType

MAX_DECIMAL_PRECISION = 38
# PostgreSQL base types read natively (ADBC gives the right Arrow type); the rest are read as ::text.
_NATIVE_KINDS = {
    "int2": "int",
    "int4": "int",
    "int8": "long",
    "oid": "long",
    "float4": "float",
    "float8": "double",
    "bool": "boolean",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "bytea": "binary",
    "text": "string",
    "varchar": "string",
    "bpchar": "string",
}


@dataclass(frozen=True)
class SourceColumn:
    """One source column: `source_type` as the source writes it (e.g. `numeric(12,2)`), `kind`
    the Iceberg type it maps to (int, long, float, double, decimal, boolean, string, date,
    timestamp, timestamptz, time, binary), `read_as` the SQL cast a bulk read applies (or "")."""

    name: str
    source_type: str
    kind: str
    nullable: bool = True
    precision: int = 0
    scale: int = 0
    read_as: str = ""

    def describe(self) -> dict:
        """The column as recorded in _schema_changes."""
        return {"name": self.name, "type": self.source_type, "nullable": self.nullable}


def postgres_column(
    name: str, source_type: str, base_type: str, typmod: int, category: str, nullable: bool = True, domain: bool = False
) -> SourceColumn:
    """Map a PostgreSQL column (`base_type` = pg_type.typname of the type or of a domain's base
    type, `typmod` its pg_attribute/pg_type typmod, `category` pg_type.typcategory)."""
    if category == "A":  # arrays: their text form, e.g. {1,2,3}
        return SourceColumn(name, source_type, "string", nullable, read_as="text")
    if base_type == "numeric":
        precision, scale = numeric_precision_scale(typmod)
        if 0 < precision <= MAX_DECIMAL_PRECISION and 0 <= scale <= precision:
            return SourceColumn(name, source_type, "decimal", nullable, precision, scale, read_as="text")
        return SourceColumn(name, source_type, "string", nullable, read_as="text")  # no fixed scale: exact text
    kind = _NATIVE_KINDS.get(base_type)
    if kind is None:
        return SourceColumn(name, source_type, "string", nullable, read_as="text")
    read_as = "int8" if base_type == "oid" else (base_type if domain else "")  # a domain: read as its base type
    return SourceColumn(name, source_type, kind, nullable, read_as=read_as)


def numeric_precision_scale(typmod: int) -> tuple[int, int]:
    """numeric(p,s) from its typmod; (0, 0) when unconstrained."""
    if typmod < 4:
        return 0, 0
    value = typmod - 4
    return (value >> 16) & 0xFFFF, value & 0xFFFF


def iceberg_type(column: SourceColumn) -> IcebergType:
    from pyiceberg import types as t

    if column.kind == "decimal":
        return t.DecimalType(column.precision, column.scale)
    return {
        "int": t.IntegerType(),
        "long": t.LongType(),
        "float": t.FloatType(),
        "double": t.DoubleType(),
        "boolean": t.BooleanType(),
        "string": t.StringType(),
        "date": t.DateType(),
        "timestamp": t.TimestampType(),
        "timestamptz": t.TimestamptzType(),
        "time": t.TimeType(),
        "binary": t.BinaryType(),
    }[column.kind]


def arrow_type(column: SourceColumn) -> pa.DataType:
    import pyarrow as pa

    if column.kind == "decimal":
        return pa.decimal128(column.precision, column.scale)
    return {
        "int": pa.int32(),
        "long": pa.int64(),
        "float": pa.float32(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "string": pa.large_string(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "time": pa.time64("us"),
        "binary": pa.large_binary(),
    }[column.kind]


# Widenings Iceberg allows in place (schema evolution); any other change of kind is incompatible.
_WIDER = {("int", "long"), ("float", "double")}


def widens(old: SourceColumn, new: SourceColumn) -> bool:
    """`old` can become `new` by Iceberg type promotion (int->long, float->double, wider decimal)."""
    if (old.kind, new.kind) in _WIDER:
        return True
    return old.kind == new.kind == "decimal" and old.scale == new.scale and new.precision >= old.precision


def same_iceberg_type(old: SourceColumn, new: SourceColumn) -> bool:
    return old.kind == new.kind and (old.kind != "decimal" or (old.precision, old.scale) == (new.precision, new.scale))


class ConversionError(ValueError):
    """A value does not fit its column's Iceberg type; the message names the column."""


def to_iceberg_array(values: pa.Array | pa.ChunkedArray, column: SourceColumn) -> pa.Array | pa.ChunkedArray:
    """A column of a bulk-read Arrow batch, cast to the column's Iceberg Arrow type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target = arrow_type(column)
    if isinstance(values.type, pa.ExtensionType):  # ADBC's opaque types keep their text in storage
        values = values.storage
    if values.type == target:
        return values
    try:
        return pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConversionError(f"column {column.name} ({column.source_type}): {exc}") from exc


def text_to_iceberg_array(texts: list[str | None], column: SourceColumn) -> pa.Array:
    """PostgreSQL text output (as pgoutput sends it, session TimeZone UTC) -> the Iceberg Arrow type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target = arrow_type(column)
    try:
        if column.kind == "binary":  # bytea_output = hex: \x0a0b...
            return pa.array([None if v is None else bytes.fromhex(v[2:]) for v in texts], target)
        raw = pa.array(texts, pa.large_string())
        if column.kind == "string":
            return raw
        if column.kind == "boolean":  # boolout: t / f
            return pc.starts_with(raw, "t")
        if column.kind == "time":
            day = pa.scalar("1970-01-01 ", pa.large_string())
            stamps = pc.cast(
                pc.binary_join_element_wise(day, raw, pa.scalar("", pa.large_string())), pa.timestamp("us")
            )
            return pc.cast(stamps, target)
        return pc.cast(raw, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise ConversionError(f"column {column.name} ({column.source_type}): {exc}") from exc
