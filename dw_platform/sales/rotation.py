"""Re-encrypt the sales domain's sensitive values under the newest Fernet key (`dw rotate-keys sales`).

The one sanctioned UPDATE of bronze: the ciphertext changes, the plaintext does not. One blob at
a time, each in its own transaction holding the same advisory lock as a load of that blob, so a
rotation and a load never interleave. Values already under the newest key are skipped, so an
interrupted rotation can simply be run again. Order: put the new key first in
DW_SALES_FERNET_KEYS (keep the old ones after it), deploy, run the rotation, then drop old keys.
"""

from collections.abc import Callable

import psycopg
from psycopg import sql

from dw_platform.defs.sales.partitions import INCOMING, partition_key
from dw_platform.lib.bronze import ensure_bronze_objects
from dw_platform.lib.crypto import Cipher
from dw_platform.sales.ingest import SALES, SCHEMA

BATCH = 5_000


def rotate_keys(conn: psycopg.Connection, cipher: Cipher, log: Callable[[str], None] = print) -> dict[str, int]:
    """Rotate every sensitive value of bronze.sales and every quarantined raw line; returns counts."""
    ensure_bronze_objects(conn, SALES)
    # Updates find their row by (blob, line).
    conn.execute(
        sql.SQL("create index if not exists {} on {} (_bronze_source_file, source_line)").format(
            sql.Identifier(f"{SALES.name}_blob_line_idx"), SALES.ident
        )
    )
    sensitive = SCHEMA.sensitive_columns
    counts = {"rows_rotated": 0, "quarantine_rows_rotated": 0, "blobs": 0}
    blobs = [
        r[0]
        for r in conn.execute(
            sql.SQL("select distinct _bronze_source_file from {} union select distinct blob_name from {}").format(
                SALES.ident, sql.Identifier(*SCHEMA.quarantine_table.split("."))
            )
        )
    ]
    for blob in blobs:
        with conn.transaction():
            key = partition_key(blob.removeprefix(INCOMING))
            conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{SALES.qualified_name}:{key}",))
            counts["rows_rotated"] += _rotate(
                conn, cipher, SALES.ident, "_bronze_source_file", "source_line", sensitive, blob
            )
            counts["quarantine_rows_rotated"] += _rotate(
                conn,
                cipher,
                sql.Identifier(*SCHEMA.quarantine_table.split(".")),
                "blob_name",
                "line_number",
                ["raw_line_encrypted"],
                blob,
            )
        counts["blobs"] += 1
        log(f"rotated {blob}")
    return counts


def _rotate(
    conn, cipher: Cipher, table: sql.Identifier, blob_column: str, line_column: str, columns: list[str], blob: str
) -> int:
    """Rotate `columns` of the rows of one blob, keyed by (blob, line); returns rows changed."""
    select = sql.SQL("select {line}, {cols} from {table} where {blob} = %s").format(
        line=sql.Identifier(line_column),
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        table=table,
        blob=sql.Identifier(blob_column),
    )
    update = sql.SQL("update {table} set {sets} where {blob} = %s and {line} = %s").format(
        table=table,
        blob=sql.Identifier(blob_column),
        line=sql.Identifier(line_column),
        sets=sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns),
    )
    changed = 0
    with conn.cursor(name="rotate_read") as reader, conn.cursor() as writer:
        reader.execute(select, (blob,))
        while batch := reader.fetchmany(BATCH):
            updates = []
            for line, *tokens in batch:
                if all(t is None or cipher.is_current(t) for t in tokens):
                    continue
                updates.append((*(cipher.rotate(t) for t in tokens), blob, line))
            if updates:
                writer.executemany(update, updates)
                changed += len(updates)
    return changed
