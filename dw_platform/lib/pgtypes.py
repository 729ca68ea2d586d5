"""Which Python values each bronze column type takes, to name the column of a value that does
not fit (shared by the loader and the ODBC reader process, so it imports nothing heavy)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

# PostgreSQL's binary COPY framing: the header (signature, flags, extension length) and trailer.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"

PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "text": str,
    "integer": int,
    "bigint": int,
    "smallint": int,
    "boolean": bool,
    "date": date,
    "timestamp": datetime,
    "timestamptz": datetime,
    "uuid": uuid.UUID,
    "double precision": float,
    "numeric": (Decimal, int),
}


def describe_mismatch(row: Sequence[Any], columns: Sequence[tuple[str, str]], exc: Exception) -> str:
    """Name the first column (name, pg_type) whose value cannot be written as its declared type."""
    for value, (name, pg_type) in zip(row, columns):
        expected = PYTHON_TYPES.get(pg_type)
        if value is not None and expected is not None and not isinstance(value, expected):
            return f"column {name} ({pg_type}) got {type(value).__name__} {value!r:.60}"
    return str(exc)
