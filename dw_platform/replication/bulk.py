"""The bulk load: every selected table copied into Iceberg at one consistent snapshot.

One run opens one snapshot (see `postgres.py`: the slot's exported snapshot on the first load, a
temporary slot's later) and loads its tables in parallel threads, each table on its own: it reads
the table's columns and rows inside the snapshot, then replaces the Iceberg table's data in one
Iceberg transaction (schema evolution, delete, streamed Parquet files; readers see the old data
or the new, never half). A table that fails is tried again with exponential back-off while the
snapshot is still open (same position); when its attempts are used up it is `failed` in
`_cdc_status` and the others carry on. A completed table is skipped unless a full reload is asked
for. Two loads of one table (two runs) take turns on a warehouse advisory lock.

When the source's slot is unusable (missing, invalidated, moved behind the platform's back: see
`slot.py`), changes have been lost for every table loaded from it: a run must then re-seed all of
them together (it drops an unusable slot, makes a new one and copies every table of the run at its
exported snapshot, completed ones included); a run of fewer tables is refused, so that no table
goes on from a new slot while another misses the changes in between.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.lib.prefetch import prefetch
from dw_platform.replication import eventlog, iceberg, schema_changes
from dw_platform.replication.extractor import Extractor, Snapshot, SourceTable
from dw_platform.replication.slot import SlotUnusable, slot_health
from dw_platform.replication.sources import SourceConfig
from dw_platform.replication.status import ReplicationMeta, now

# SQLSTATE classes worth another attempt: connection lost (08), rollback/serialization (40),
# out of resources (53), lock not available (55P03), cancelled/shut down (57), system error (58).
TRANSIENT_SQLSTATES = ("08", "40", "53", "55P03", "57", "58")


@dataclass
class TableLoad:
    """The outcome of one table in a bulk run."""

    key: str
    status: str  # completed | failed | skipped
    rows: int = 0
    files: int = 0
    snapshot_id: int | None = None
    start_lsn: str | None = None
    snapshot_kind: str | None = None
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    transient: bool = False
    table: SourceTable | None = None
    batch_id: str | None = None
    iceberg_table: str | None = None
    schema_version: int = 0
    schema_changes: list[dict] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def split_key(key: str) -> tuple[str, str]:
    """A partition key `schema.table` as (schema, table); schema names must not contain dots."""
    schema, _, name = key.partition(".")
    return schema, name


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed (lost connection, lock timeout, I/O), following causes."""
    while exc is not None:
        state = getattr(exc, "sqlstate", None)
        if state and state.startswith(TRANSIENT_SQLSTATES):
            return True
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if type(exc).__name__ == "OperationalError" and not state:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


class BulkLoad:
    """One bulk-load run over `keys` of one source."""

    def __init__(
        self,
        source: SourceConfig,
        extractor: Extractor,
        lakehouse: Lakehouse,
        *,
        run_id: str | None,
        log: Callable[[str], None],
        warn: Callable[[str], None],
    ):
        self.source = source
        self.extractor = extractor
        self.lakehouse = lakehouse
        self.meta = ReplicationMeta(lakehouse, source.name)
        self.run_id = run_id
        self.log = log
        self.warn = warn

    def run(self, keys: list[str], full_reload: bool = False, workers: int | None = None) -> Iterator[TableLoad]:
        """Load `keys` (completed ones skipped unless `full_reload`), yielding each table's outcome
        as it finishes."""
        statuses = self.meta.statuses()
        reseed = self._reseed(keys, statuses)
        todo = [k for k in keys if reseed or full_reload or statuses.get(k, {}).get("status") != "completed"]
        for key in keys:
            if key not in todo:
                self.log(
                    f"{key}: completed at {statuses[key].get('start_lsn')} - skipped (full_reload: true reloads it)"
                )
                yield TableLoad(
                    key,
                    "skipped",
                    rows=statuses[key].get("rows_loaded") or 0,
                    snapshot_id=statuses[key].get("snapshot_id"),
                    start_lsn=statuses[key].get("start_lsn"),
                )
        if not todo:
            return
        self.meta.update({k: {"status": "pending", "pending_at": now(), "dagster_run_id": self.run_id} for k in todo})
        with self.extractor.snapshot() as snap:
            if snap.kind == "slot":  # where the new slot starts: capture goes on from here
                with self.lakehouse.connect() as conn:
                    eventlog.ensure_log(conn)
                    eventlog.record_slot(conn, self.source.name, self.source.slot, position_number(snap.position))
            self.log(
                f"snapshot at {snap.position} ({'the source slot ' + self.source.slot if snap.kind == 'slot' else snap.kind}); "
                f"loading {len(todo)} table(s) with {min(workers or self.source.workers, len(todo))} worker(s)"
            )
            attempts = {k: statuses.get(k, {}).get("attempts") or 0 for k in todo}
            with ThreadPoolExecutor(
                max_workers=max(1, min(workers or self.source.workers, len(todo))), thread_name_prefix="bulk"
            ) as pool:
                futures = [pool.submit(self._load_with_retries, snap, k, attempts[k]) for k in todo]
                for future in as_completed(futures):
                    yield future.result()

    def _reseed(self, keys: list[str], statuses: dict[str, dict]) -> bool:
        """True when the slot is unusable and this run re-seeds every table loaded from it (an
        unusable slot still there is dropped: the run makes a new one); SlotUnusable when the run
        would leave some of them behind."""
        if self.source.engine != "postgresql":
            return False
        health = slot_health(self.source, self.lakehouse, self.meta)
        if health.problem is None:
            return False
        left_out = sorted(k for k, s in statuses.items() if s.get("start_lsn") and k not in keys)
        if left_out:
            raise SlotUnusable(
                f"refused: the {health.name} {health.cause}, so loading only {', '.join(keys)} would lose the "
                f"changes of the tables it leaves out; re-seed every table in ONE run (all partitions of "
                f"bronze/lakehouse/{self.source.name}); left out: {', '.join(left_out)}"
            )
        self.warn(f"{health.problem}. Re-seeding {len(keys)} table(s) at a new slot's position")
        if health.slot is not None:
            self.extractor.drop_slot()
        return True

    def _load_with_retries(self, snap: Snapshot, key: str, attempts_before: int) -> TableLoad:
        delay = self.source.retry_delay_s
        for attempt in range(1, self.source.table_attempts + 1):
            self.meta.update(
                {
                    key: {
                        "status": "running",
                        "attempts": attempts_before + attempt,
                        "started_at": now(),
                        "start_lsn": snap.position,
                        "snapshot_kind": snap.kind,
                    }
                }
            )
            try:
                result = self._load(snap, key)
            except Exception as exc:  # recorded, retried or reported; never lost
                transient = is_transient(exc)
                error = f"attempt {attempt}: {one_line(exc)}"
                final = not transient or attempt == self.source.table_attempts
                self.meta.update({key: {"last_error": error, **({"status": "failed"} if final else {})}})
                if final:
                    self.warn(f"{key}: failed after {attempt} attempt(s): {one_line(exc)}")
                    return TableLoad(
                        key,
                        "failed",
                        attempts=attempt,
                        error=one_line(exc),
                        transient=transient,
                        start_lsn=snap.position,
                    )
                self.warn(f"{key}: attempt {attempt} failed ({one_line(exc)}); retrying in {delay:.0f}s")
                time.sleep(delay)
                delay *= 2
                continue
            result.attempts = attempt
            self.meta.update(
                {
                    key: {
                        "status": "completed",
                        "rows_loaded": result.rows,
                        "files": result.files,
                        "snapshot_id": result.snapshot_id,
                        "completed_at": now(),
                        "last_error": None,
                        "iceberg_table": result.iceberg_table,
                        "load_batch_id": result.batch_id,
                        "primary_key": ",".join(result.table.primary_key),
                        "cdc_mode": cdc_mode(self.source, result.table),
                        "applied_lsn": None,
                        "applied_offset": None,
                        "events_applied": 0,
                        "truncated_at": None,
                        "note": None,
                    }
                }
            )
            return result
        raise AssertionError("unreachable")

    def _load(self, snap: Snapshot, key: str) -> TableLoad:
        """Copy one table at `snap` into its Iceberg table, replacing its data."""
        from pyiceberg.expressions import AlwaysTrue

        started = time.perf_counter()
        load_ts = datetime.now(timezone.utc)
        batch_id = str(uuid.uuid4())
        with table_lock(self.lakehouse, self.source.name, key):
            table, batches = self.extractor.read(snap, *split_key(key))
            ice, _created = iceberg.load_or_create(
                self.lakehouse.catalog(), self.source.namespace, table, self.source.file_size_mb
            )
            properties = {
                "dw.operation": "bulk_load",
                "dw.start-position": snap.position,
                "dw.snapshot-kind": snap.kind,
                "dw.batch-id": batch_id,
                "dw.dagster-run-id": self.run_id or "",
            }
            lineage = dict(
                op="r",
                lsn=position_number(snap.position),
                load_ts=load_ts,
                batch_id=batch_id,
                source_file=f"{self.source.name}:{key}",
            )
            rows = files = 0
            with ice.transaction() as tx:
                iceberg.keep_properties(tx, self.source.file_size_mb)
                iceberg.evolve(tx, iceberg.plan_evolution(tx.table_metadata.schema(), table))
                if iceberg.has_rows(tx):
                    tx.delete(AlwaysTrue(), snapshot_properties=properties)
                layout = iceberg.BatchLayout.of(tx)
                with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
                    for file_rows in iceberg.write_files(
                        tx, ice, (iceberg.with_lineage(b, layout, **lineage) for b in prefetch(batches)), append
                    ):
                        rows += file_rows
                        files += 1
            ice = ice.refresh()
        snapshot_id = ice.current_snapshot().snapshot_id
        changes = schema_changes.record(self.meta, key, table.describe(), snapshot_id, self.run_id)
        version, _ = self.meta.current_schema(key)
        return TableLoad(
            key,
            "completed",
            rows=rows,
            files=files,
            snapshot_id=snapshot_id,
            start_lsn=snap.position,
            snapshot_kind=snap.kind,
            seconds=time.perf_counter() - started,
            table=table,
            iceberg_table=".".join((*self.source.namespace, table.iceberg_name)),
            schema_version=version,
            schema_changes=changes,
            batch_id=batch_id,
        )


def cdc_mode(source: SourceConfig, table: SourceTable) -> str:
    """How changes of `table` are applied: by primary key, by whole row, or not at all."""
    if table.primary_key:
        return "key"
    return "full_row" if source.tables_without_primary_key == "full" else "skipped: no primary key"


def position_number(position: str) -> int:
    """A log position as a number (LSN X/Y -> 64-bit integer; SCN as is), for `_cdc_lsn`."""
    if "/" in position:
        from dw_platform.replication.postgres import lsn_to_int

        return lsn_to_int(position)
    return int(position)


@contextmanager
def table_lock(lakehouse: Lakehouse, source: str, key: str) -> Iterator[None]:
    """A warehouse advisory lock per replicated table: bulk loads and change application of one
    table take turns, whatever process runs them."""
    name = f"dw_platform.replication:{source}:{key}"
    with lakehouse.connect() as conn:
        conn.execute("select pg_advisory_lock(hashtextextended(%s, 0))", (name,))
        try:
            yield
        finally:
            conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (name,))
