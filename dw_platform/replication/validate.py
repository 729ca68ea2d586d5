"""`validate_lakehouse` (the seed's validate_iceberg_tables): what the lakehouse holds for a source
compared with what the source has: row counts per table, source tables missing from the
lakehouse, tables in the lakehouse the source no longer selects, tables failed in _cdc_status."""

from __future__ import annotations

from dataclasses import dataclass, field

from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.replication.extractors import extractor_for
from dw_platform.replication.sources import SourceConfig
from dw_platform.replication.status import ReplicationMeta


@dataclass
class ValidationReport:
    source: str
    rows: dict[str, int] = field(default_factory=dict)  # table key -> rows in its Iceberg table
    missing: list[str] = field(default_factory=list)
    not_on_source: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    hide_empty: bool = False

    def shown(self) -> dict[str, int]:
        return {k: n for k, n in sorted(self.rows.items()) if n or not self.hide_empty}

    def lines(self) -> list[str]:
        hidden = len(self.rows) - len(self.shown())
        out = [
            f"{self.source}: {len(self.rows)} table(s) in the lakehouse"
            + (f" ({hidden} empty hidden)" if hidden else "")
        ]
        out += [f"  {key:<50} {rows:>12,}" for key, rows in self.shown().items()]
        out += [f"  MISSING from the lakehouse: {key}" for key in self.missing]
        out += [f"  not selected on the source any more: {key}" for key in self.not_on_source]
        out += [f"  FAILED in _cdc_status: {key}" for key in self.failed]
        return out

    def metadata(self) -> dict:
        return {
            "row_counts": self.shown(),
            "missing_from_lakehouse": ", ".join(self.missing) or "none",
            "not_on_source": ", ".join(self.not_on_source) or "none",
            "failed": ", ".join(self.failed) or "none",
            "tables": len(self.rows),
        }

    def problems(self) -> list[str]:
        return ([f"{self.source}: missing from the lakehouse: {', '.join(self.missing)}"] if self.missing else []) + (
            [f"{self.source}: failed: {', '.join(self.failed)}"] if self.failed else []
        )


def validate_source(source: SourceConfig, lakehouse: Lakehouse, hide_empty: bool = False) -> ValidationReport:
    from pyiceberg.exceptions import NoSuchNamespaceError

    report = ValidationReport(source.name, hide_empty=hide_empty)
    selected = {t.iceberg_name: t.key for t in extractor_for(source).discover()}
    catalog = lakehouse.catalog()
    try:
        present = [ident[-1] for ident in catalog.list_tables(source.namespace) if not ident[-1].startswith("_")]
    except NoSuchNamespaceError:
        present = []
    statuses = ReplicationMeta(lakehouse, source.name).statuses() if present else {}
    by_iceberg = {s.get("iceberg_table", "").rsplit(".", 1)[-1]: k for k, s in statuses.items()}
    for name in present:
        key = selected.get(name) or by_iceberg.get(name) or name
        report.rows[key] = catalog.load_table((*source.namespace, name)).scan().count()
        if name not in selected:
            report.not_on_source.append(key)
    report.missing = sorted(key for name, key in selected.items() if name not in present)
    report.failed = sorted(k for k, s in statuses.items() if s.get("status") == "failed")
    return report


def fingerprint(data, key: list[str]) -> tuple[int, str]:
    """Row count and a content hash of an Arrow table: sha256 over its rows in key order (all
    columns' order when there is no key), each row as the repr of its values."""
    import hashlib

    import pyarrow.compute as pc

    order = key or data.column_names
    data = data.take(pc.sort_indices(data, sort_keys=[(c, "ascending") for c in order])) if data.num_rows else data
    digest = hashlib.sha256()
    columns = [data.column(c).to_pylist() for c in data.column_names]
    for row in zip(*columns):
        digest.update(repr(row).encode())
        digest.update(b"\n")
    return data.num_rows, digest.hexdigest()


def compare_table(source: SourceConfig, lakehouse: Lakehouse, key: str, status: dict) -> dict:
    """The source table and its lakehouse table side by side: rows and content hash over the
    source's current columns (primary key first in the order). A source column the lakehouse
    lacks (added, or renamed, with no change streamed since) is a difference too."""
    import pyarrow as pa

    from dw_platform.replication.bulk import split_key
    from dw_platform.replication.typemap import arrow_type

    table, batches = extractor_for(source).read(None, *split_key(key))
    source_data = pa.Table.from_batches(
        list(batches), schema=pa.schema([pa.field(c.name, arrow_type(c)) for c in table.columns])
    )
    ice = lakehouse.catalog().load_table(status["iceberg_table"])
    in_lakehouse = {f.name for f in ice.schema().fields}
    names = [c.name for c in table.columns if c.name in in_lakehouse]
    missing = [c.name for c in table.columns if c.name not in in_lakehouse]
    lake_data = ice.scan(selected_fields=tuple(names)).to_arrow().select(names)
    source_data = source_data.select(names).cast(lake_data.schema)
    rows_source, hash_source = fingerprint(source_data, list(table.primary_key))
    rows_lake, hash_lake = fingerprint(lake_data, list(table.primary_key))
    return {
        "rows_source": rows_source,
        "rows_lakehouse": rows_lake,
        "hash_source": hash_source[:16],
        "hash_lakehouse": hash_lake[:16],
        "columns_missing": ", ".join(missing) or "none",
        "match": not missing and (rows_source, hash_source) == (rows_lake, hash_lake),
    }
