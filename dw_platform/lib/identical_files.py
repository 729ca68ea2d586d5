"""A file sent again under another name is recognised by its content.

A load hashes the file's content as it streams past (`ContentDigest`: SHA-256 of the bytes after
decompression, so `access.log.1` and a later `access.log.2.gz` holding the same lines are one
file), and `bronze.load` records the hash in the batch ledger. Before the load commits,
`refuse_identical` looks for a file with the same hash that is loaded into the same table under
another partition (its latest successful load, so a partition whose content has since been
replaced no longer counts): if there is one, the load is rolled back with `IdenticalFile`, which
the ledger records as `identical`, naming the first load. Files that hold no record (an empty
log, a header alone) are never refused: they have nothing to duplicate. A domain whose source
legitimately sends identical files (a full snapshot that did not change) turns this off with
its `DW_<DOMAIN>_ACCEPT_IDENTICAL_FILES` setting: `true` for all its files, or a comma-separated
list of file names (`content.json`) for those only; a domain may give the setting a default
(a catalog sent whole every day, unchanged on quiet days, say).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg

from dw_platform.lib.compression import plain_name


class ContentDigest:
    """The SHA-256 of a byte stream, taken as the stream passes through `through`."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0
        self.complete = False

    def through(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._hash.update(chunk)
            self.size += len(chunk)
            yield chunk
        self.complete = True

    def hexdigest(self) -> str | None:
        """The hash, once the whole stream has passed (None before: a partial hash names nothing)."""
        return self._hash.hexdigest() if self.complete else None


@dataclass(frozen=True)
class FirstLoad:
    partition_key: str
    source: str
    batch_id: UUID
    finished_at: datetime


class IdenticalFile(Exception):
    """The file's bytes are loaded already, under another name; the ledger records `identical`."""

    transient = False
    ledger_status = "identical"

    def __init__(self, source: str, first: FirstLoad, setting: str):
        self.first = first
        super().__init__(
            f"{source} holds the same bytes as {first.source}, loaded in batch {first.batch_id} at "
            f"{first.finished_at:%Y-%m-%d %H:%M:%S %Z}: not loaded twice (set {setting}=true where identical "
            "files are legitimate)"
        )


def accepted(setting: str, name: str = "", default: str = "") -> bool:
    """Whether a domain's `DW_<DOMAIN>_ACCEPT_IDENTICAL_FILES` setting (`default` when unset) lets
    identical files (called `name`, compression suffix aside) load."""
    value = os.environ.get(setting, default).strip().lower()
    return value in ("1", "true", "yes", "on") or bool(name) and plain_name(name).lower() in value.split(",")


def first_load(conn: psycopg.Connection, table: str, sha256: str, partition_key: str) -> FirstLoad | None:
    """The current load of another partition of `table` that read the same content, if any."""
    row = conn.execute(
        """
        select l.partition_key, l.source, l.batch_id, l.finished_at from bronze.batch_ledger l
        where l.content_sha256 = %(sha)s and l.target_table = %(table)s and l.status = 'succeeded'
            and l.partition_key <> %(key)s
            and not exists (
                select from bronze.batch_ledger later
                where later.target_table = l.target_table and later.partition_key = l.partition_key
                    and later.status = 'succeeded' and later.finished_at > l.finished_at)
        order by l.finished_at limit 1
        """,
        {"sha": sha256, "table": table, "key": partition_key},
    ).fetchone()
    return FirstLoad(*row) if row else None


def refuse_identical(
    conn: psycopg.Connection,
    digest: ContentDigest,
    *,
    table: str,
    partition_key: str,
    source: str,
    records: int,
    setting: str,
    default: str = "",
) -> None:
    """Inside a load's transaction, once the file is read: raise `IdenticalFile` if its content is
    loaded already under another partition. A lock on the hash makes two loads of the same
    content at once take turns, so the second sees the first."""
    sha256 = digest.hexdigest()
    if sha256 is None or records == 0 or accepted(setting, source.rsplit("/", 1)[-1], default):
        return
    conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"dw_platform.content:{sha256}",))
    first = first_load(conn, table, sha256, partition_key)
    if first is not None:
        raise IdenticalFile(source, first, setting)
