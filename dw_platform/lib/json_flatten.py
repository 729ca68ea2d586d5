"""Nested JSON documents into relational rows with stable, inferred column types.

`flatten(doc)` turns nested objects into prefixed columns (`ratings.imdb` -> `ratings_imdb`)
and arrays into child rows (`genres: [...]` -> child `genres`, one row per element with its
`position`; scalar elements in `value`, object elements flattened like the parent; arrays
nested inside an element kept as JSON text).

`TableShape` holds a table's columns and their PostgreSQL types. Types are inferred from the
first non-null value (booleans -> boolean, numbers -> numeric, strings -> text) and then stay
fixed: a later value that cannot be stored in its column's type makes the document invalid
(`DocumentError`, the quarantine reason); a number or boolean arriving in a text column is
stored as its JSON text. A field never seen before becomes a new column (`TableShape.absorb`
returns it so the caller can add and record it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names
_NOT_WORD = re.compile(r"[^a-z0-9]+")


class DocumentError(ValueError):
    """A document cannot be loaded; the message is the quarantine reason."""


def column_name(key: str) -> str:
    """A JSON key as a lower-case SQL identifier: `Release Date` -> `release_date`."""
    name = _NOT_WORD.sub("_", str(key).strip().lower()).strip("_") or "field"
    if name[0].isdigit():
        name = "f_" + name
    return name[:MAX_IDENTIFIER]


@dataclass
class Flat:
    row: dict[str, Any] = field(default_factory=dict)
    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def flatten(doc: Mapping[str, Any]) -> Flat:
    flat = Flat()
    _walk(doc, "", flat.row, flat.children)
    return flat


def _walk(obj: Mapping[str, Any], prefix: str, row: dict, children: dict | None) -> None:
    for key, value in obj.items():
        name = (prefix + column_name(key))[:MAX_IDENTIFIER]
        if isinstance(value, Mapping):
            _walk(value, name + "_", row, children)
        elif isinstance(value, list):
            if children is None:  # an array inside an array element: kept whole, as JSON text
                row[name] = json.dumps(value, sort_keys=True)
            else:
                children[name] = [_element(e) for e in value]
        else:
            row[name] = value


def _element(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        row: dict[str, Any] = {}
        _walk(value, "", row, None)
        return row
    if isinstance(value, list):
        return {"value": json.dumps(value, sort_keys=True)}
    return {"value": value}


def infer_type(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "numeric"
    return "text"


def coerce(value: Any, pg_type: str, column: str) -> Any:
    """`value` as a Python value of `pg_type`, or DocumentError saying why it cannot be."""
    if value is None:
        return None
    if pg_type == "text":
        return value if isinstance(value, str) else json.dumps(value)
    if pg_type == "numeric" and isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return Decimal(str(value))
    if pg_type == "boolean" and isinstance(value, bool):
        return value
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise DocumentError(f"{column}: {shown} does not fit the column's type {pg_type}")


@dataclass
class TableShape:
    """The columns of one flattened table (beyond its fixed key and lineage columns), in order."""

    columns: dict[str, str] = field(default_factory=dict)

    def plan(self, row: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Coerced values for `row` and the new columns it needs; raises DocumentError.
        Nothing changes until `absorb`."""
        new: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name, value in row.items():
            pg_type = self.columns.get(name) or new.get(name)
            if pg_type is None:
                pg_type = infer_type(value)
                if pg_type is None:
                    continue  # null and never seen: nothing to learn from it yet
                new[name] = pg_type
            values[name] = coerce(value, pg_type, name)
        return values, new

    def absorb(self, new: Mapping[str, str]) -> None:
        for name, pg_type in new.items():
            self.columns.setdefault(name, pg_type)

    def as_tuple(self, values: Mapping[str, Any]) -> tuple:
        return tuple(values.get(name) for name in self.columns)
