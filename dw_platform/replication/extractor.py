"""What a source engine must provide to be copied into the lakehouse, engine-neutral.

An `Extractor` discovers the selected tables from the source's catalog, opens a consistent
`Snapshot` (a log position every table is read at) and streams one table's rows at that snapshot
as Arrow record batches. PostgreSQL (`postgres.py`) reads inside an exported snapshot of a
logical replication slot; Oracle (`oracle.py`) reads `AS OF SCN`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dw_platform.replication.sources import SourceConfig
from dw_platform.replication.typemap import SourceColumn

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class SourceTable:
    """A source table as the catalog describes it. `key` (schema.table) is its Dagster partition."""

    schema: str
    name: str
    columns: tuple[SourceColumn, ...]
    primary_key: tuple[str, ...] = ()
    replica_identity: str = ""  # PostgreSQL: d(efault), f(ull), i(ndex), n(othing)
    skipped_columns: tuple[str, ...] = field(default=())  # dropped by a policy (Oracle LONG: exclude)

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def iceberg_name(self) -> str:
        """The Iceberg table's name in the source's namespace: <schema>__<table>."""
        return f"{self.schema}__{self.name}"

    def describe(self) -> list[dict]:
        """The schema as recorded in _schema_changes (JSON)."""
        return [{**c.describe(), "primary_key": c.name in self.primary_key} for c in self.columns]


@dataclass(frozen=True)
class Snapshot:
    """A consistent read position: `position` is the log position the copy equals (a PostgreSQL
    LSN such as 0/1875098, an Oracle SCN); `kind` says where it came from (the source's
    replication slot, a temporary slot, an SCN); `token` is what readers need to join it."""

    position: str
    kind: str
    token: str = ""


class Extractor(abc.ABC):
    """One source engine. Implementations must not keep per-table state: `read` runs in threads."""

    engine: str

    def __init__(self, source: SourceConfig):
        self.source = source

    @abc.abstractmethod
    def discover(self) -> list[SourceTable]:
        """Every table the source's include/exclude patterns select, from the live catalog."""

    @abc.abstractmethod
    def snapshot(self) -> AbstractContextManager[Snapshot]:
        """Open a consistent snapshot; tables read with it (in any thread) are as of its position
        until the context exits."""

    @abc.abstractmethod
    def read(self, snapshot: Snapshot, schema: str, name: str) -> tuple[SourceTable, Iterator[pa.RecordBatch]]:
        """The table as it was at `snapshot` (its columns then) and its rows, streamed in batches
        whose columns are in `SourceTable.columns` order, each already of its Iceberg Arrow type."""

    def prepare(self, tables: list[SourceTable], log) -> None:  # noqa: B027 - an optional hook
        """Make the source ready to capture changes of `tables` (e.g. replica identities); default: nothing."""
