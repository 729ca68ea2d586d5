"""`_cdc_status` and `_schema_changes`: the replication's own tables, kept in the lakehouse beside
the data (Iceberg tables in the source's namespace, as the seed system keeps them).

`_cdc_status`: one row per source table: its load status (pending, running, completed, failed),
start position, rows loaded, attempts, last error, timestamps and, for change data capture, the
last applied position and consumer offset. `_schema_changes`: one row per change of a table's
schema (table created = its baseline, column added, column removed, type changed) with the
schema before and after (JSON), the schema version, the Iceberg snapshot and the notification state
(`notification_sent` null = none needed, false = pending, true = sent).

Both are small and rewritten whole on each change, serialized across threads and processes by a
warehouse advisory lock per source, so each holds one data file and concurrent writers never lose
an update.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from dw_platform.lib.lakehouse import TIDY_METADATA, Lakehouse
from dw_platform.replication.typemap import SourceColumn, iceberg_type

if TYPE_CHECKING:
    from pyiceberg.table import Table

STATUS_TABLE = "_cdc_status"
SCHEMA_CHANGES_TABLE = "_schema_changes"
STATUSES = ("pending", "running", "completed", "failed")
CHANGE_TYPES = ("table_created", "column_added", "column_removed", "type_changed")
KEEP_SNAPSHOTS = timedelta(days=1)

STATUS_COLUMNS = (
    ("source", "string"),
    ("table_name", "string"),
    ("iceberg_table", "string"),
    ("status", "string"),
    ("cdc_mode", "string"),
    ("primary_key", "string"),
    ("start_lsn", "string"),
    ("snapshot_kind", "string"),
    ("rows_loaded", "long"),
    ("files", "int"),
    ("snapshot_id", "long"),
    ("attempts", "int"),
    ("last_error", "string"),
    ("load_batch_id", "string"),
    ("dagster_run_id", "string"),
    ("pending_at", "timestamptz"),
    ("started_at", "timestamptz"),
    ("completed_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    # change data capture (part 2): where the table's applied changes stand
    ("applied_lsn", "string"),
    ("applied_offset", "long"),
    ("applied_at", "timestamptz"),
    ("events_applied", "long"),
    ("truncated_at", "timestamptz"),
    ("note", "string"),
)
CHANGE_COLUMNS = (
    ("change_id", "string"),
    ("source", "string"),
    ("table_name", "string"),
    ("change_time", "timestamptz"),
    ("change_type", "string"),
    ("column_name", "string"),
    ("schema_before", "string"),
    ("schema_after", "string"),
    ("schema_version", "int"),
    ("snapshot_id", "long"),
    ("notification_sent", "boolean"),
    ("notification_sent_at", "timestamptz"),
    ("dagster_run_id", "string"),
)

_process_lock = threading.Lock()


def _schema(columns: tuple[tuple[str, str], ...], required: tuple[str, ...]):
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField

    return Schema(
        *(
            NestedField(i, name, iceberg_type(SourceColumn(name, "", kind)), required=name in required)
            for i, (name, kind) in enumerate(columns, start=1)
        )
    )


def now() -> datetime:
    return datetime.now(timezone.utc)


class ReplicationMeta:
    """The two tables of one source, read and written under the source's lock."""

    def __init__(self, lakehouse: Lakehouse, source: str):
        self.lakehouse = lakehouse
        self.source = source
        self.namespace = ("bronze", source)

    # --------------------------------------------------------------- tables and locking

    def _table(self, name: str) -> Table:
        from pyiceberg.exceptions import NoSuchTableError

        from dw_platform.replication.iceberg import ensure_namespace

        catalog = self.lakehouse.catalog()
        try:
            return catalog.load_table((*self.namespace, name))
        except NoSuchTableError:
            ensure_namespace(catalog, self.namespace)
            columns = STATUS_COLUMNS if name == STATUS_TABLE else CHANGE_COLUMNS
            required = ("source", "table_name") if name == STATUS_TABLE else ("change_id", "source", "table_name")
            return catalog.create_table_if_not_exists(
                (*self.namespace, name), _schema(columns, required), properties=TIDY_METADATA
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _process_lock, self.lakehouse.connect() as conn:
            conn.execute(
                "select pg_advisory_lock(hashtextextended(%s, 0))", (f"dw_platform.replication.meta:{self.source}",)
            )
            try:
                yield
            finally:
                conn.execute(
                    "select pg_advisory_unlock(hashtextextended(%s, 0))",
                    (f"dw_platform.replication.meta:{self.source}",),
                )

    @staticmethod
    def _rows(table: Table) -> list[dict[str, Any]]:
        return table.scan().to_arrow().to_pylist() if table.current_snapshot() else []

    @staticmethod
    def _rewrite(table: Table, columns, rows: list[dict]) -> None:
        import pyarrow as pa

        from dw_platform.replication.iceberg import arrow_schema

        schema = arrow_schema(table.schema())
        data = pa.Table.from_pylist([{name: row.get(name) for name, _ in columns} for row in rows], schema=schema)
        table.overwrite(data) if table.current_snapshot() else table.append(data)

    # --------------------------------------------------------------- _cdc_status

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Every table's status row, by table key (schema.table)."""
        return {row["table_name"]: row for row in self._rows(self._table(STATUS_TABLE))}

    def update(self, changes: dict[str, dict[str, Any]]) -> None:
        """Set fields of some tables' rows ({table key: {field: value}}), creating missing rows."""
        with self._locked():
            table = self._table(STATUS_TABLE).refresh()
            rows = {row["table_name"]: row for row in self._rows(table)}
            stamp = now()
            for key, fields in changes.items():
                unknown = set(fields) - {name for name, _ in STATUS_COLUMNS}
                if unknown:
                    raise KeyError(f"unknown _cdc_status fields {sorted(unknown)}")
                if fields.get("status") not in (None, *STATUSES):
                    raise ValueError(f"status {fields['status']!r} is not one of {STATUSES}")
                row = rows.setdefault(key, {"source": self.source, "table_name": key})
                row.update(fields, updated_at=stamp)
            self._rewrite(table, STATUS_COLUMNS, list(rows.values()))

    # --------------------------------------------------------------- _schema_changes

    def schema_changes(self, table_key: str | None = None) -> list[dict[str, Any]]:
        rows = self._rows(self._table(SCHEMA_CHANGES_TABLE))
        rows = [r for r in rows if table_key is None or r["table_name"] == table_key]
        return sorted(rows, key=lambda r: (r["table_name"], r["schema_version"], r["change_time"]))

    def current_schema(self, table_key: str) -> tuple[int, list[dict] | None]:
        """The latest recorded schema version of a table and its columns (0, None if none)."""
        changes = self.schema_changes(table_key)
        if not changes:
            return 0, None
        latest = changes[-1]
        return latest["schema_version"], json.loads(latest["schema_after"])

    def record_changes(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self._locked():
            table = self._table(SCHEMA_CHANGES_TABLE).refresh()
            self._rewrite(table, CHANGE_COLUMNS, self._rows(table) + rows)

    def mark_sent(self, change_ids: list[str], sent_at: datetime) -> None:
        with self._locked():
            table = self._table(SCHEMA_CHANGES_TABLE).refresh()
            rows = self._rows(table)
            for row in rows:
                if row["change_id"] in change_ids:
                    row.update(notification_sent=True, notification_sent_at=sent_at)
            self._rewrite(table, CHANGE_COLUMNS, rows)

    # --------------------------------------------------------------- upkeep

    def expire_old_snapshots(self) -> None:
        """Both tables are rewritten on every change: keep a day of their history."""
        with self._locked():
            for name in (STATUS_TABLE, SCHEMA_CHANGES_TABLE):
                table = self._table(name).refresh()
                if len(table.snapshots()) > 1:
                    table.maintenance.expire_snapshots().older_than(now() - KEEP_SNAPSHOTS).commit()
