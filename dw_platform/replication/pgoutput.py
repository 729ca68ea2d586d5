"""A decoder for PostgreSQL's built-in `pgoutput` logical decoding plugin (protocol version 1).

`pgoutput` is what native logical replication uses and ships with every PostgreSQL (no server
extension to install). Its messages are binary; this module turns each one into a small
dataclass. Values arrive as the column type's text output (the session's TimeZone, DateStyle ...
apply), `None` for NULL, or `UNCHANGED_TOAST` for a large value an UPDATE did not touch (pgoutput
does not resend it). Message formats: PostgreSQL docs, "Logical Replication Message Formats".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


class _UnchangedToast:
    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST = _UnchangedToast()


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # the end of the commit record: where a consumer has fully read the transaction
    commit_time: datetime


@dataclass(frozen=True)
class RelationColumn:
    name: str
    key: bool  # part of the replica identity (the primary key, or every column with FULL)
    type_oid: int
    typmod: int


@dataclass(frozen=True)
class Relation:
    relid: int
    schema: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True)
class TypeInfo:
    oid: int
    schema: str
    name: str


@dataclass(frozen=True)
class Insert:
    relid: int
    new: tuple


@dataclass(frozen=True)
class Update:
    relid: int
    new: tuple
    old: tuple | None  # the old key ('K') or whole old row ('O'); None when the key did not change


@dataclass(frozen=True)
class Delete:
    relid: int
    old: tuple  # key columns only ('K', others None) or the whole row ('O')


@dataclass(frozen=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True)
class Origin:
    lsn: int
    name: str


class DecodeError(ValueError):
    pass


_INT16, _INT32, _UINT32, _INT64 = (struct.Struct(f) for f in ("!h", "!i", "!I", "!q"))


class _Reader:
    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.pos = 0

    def _unpack(self, fmt: struct.Struct) -> int:
        try:
            value = fmt.unpack_from(self.data, self.pos)[0]
        except struct.error as exc:
            raise DecodeError("message ends early") from exc
        self.pos += fmt.size
        return value

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError("message ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise DecodeError("message ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def int16(self) -> int:
        return self._unpack(_INT16)

    def int32(self) -> int:
        return self._unpack(_INT32)

    def uint32(self) -> int:
        return self._unpack(_UINT32)

    def int64(self) -> int:
        return self._unpack(_INT64)

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DecodeError("unterminated string")
        out = self.data[self.pos : end].decode()
        self.pos = end + 1
        return out

    def timestamp(self) -> datetime:
        return PG_EPOCH + timedelta(microseconds=self.int64())

    def tuple(self) -> tuple:
        """TupleData: per column n (null), u (unchanged TOAST), t (text) or b (binary, unused)."""
        data, pos, values = self.data, self.pos, []
        unpack = _INT32.unpack_from
        try:
            (count,) = _INT16.unpack_from(data, pos)
            pos += 2
            for _ in range(count):
                kind = data[pos]
                pos += 1
                if kind == 0x74 or kind == 0x62:  # t: text, b: binary
                    (length,) = unpack(data, pos)
                    pos += 4
                    raw = data[pos : pos + length]
                    if len(raw) != length:
                        raise DecodeError("message ends early")
                    values.append(raw.decode() if kind == 0x74 else raw)
                    pos += length
                elif kind == 0x6E:  # n: null
                    values.append(None)
                elif kind == 0x75:  # u: unchanged TOAST value
                    values.append(UNCHANGED_TOAST)
                else:
                    raise DecodeError(f"unknown tuple value kind {chr(kind)!r}")
        except (IndexError, struct.error) as exc:
            raise DecodeError("message ends early") from exc
        self.pos = pos
        return tuple(values)


def decode(data: bytes):
    """One pgoutput message (as `pg_logical_slot_*_binary_changes` returns it) as a dataclass."""
    r = _Reader(data)
    kind = chr(r.byte())
    if kind == "B":
        return Begin(final_lsn=r.int64(), commit_time=r.timestamp(), xid=r.uint32())
    if kind == "C":
        r.byte()  # flags, unused
        return Commit(commit_lsn=r.int64(), end_lsn=r.int64(), commit_time=r.timestamp())
    if kind == "R":
        relid, schema, name, identity = r.uint32(), r.string(), r.string(), chr(r.byte())
        columns = []
        for _ in range(r.int16()):
            flags, column = r.byte(), r.string()
            columns.append(RelationColumn(column, bool(flags & 1), r.uint32(), r.int32()))
        return Relation(relid, schema, name, identity, tuple(columns))
    if kind == "Y":
        return TypeInfo(oid=r.uint32(), schema=r.string(), name=r.string())
    if kind == "I":
        relid = r.uint32()
        if chr(r.byte()) != "N":
            raise DecodeError("insert without a new tuple")
        return Insert(relid, r.tuple())
    if kind == "U":
        relid, old = r.uint32(), None
        marker = chr(r.byte())
        if marker in "KO":
            old = r.tuple()
            marker = chr(r.byte())
        if marker != "N":
            raise DecodeError("update without a new tuple")
        return Update(relid, r.tuple(), old)
    if kind == "D":
        relid = r.uint32()
        if chr(r.byte()) not in "KO":
            raise DecodeError("delete without an old tuple")
        return Delete(relid, r.tuple())
    if kind == "T":
        count, options = r.int32(), r.byte()
        return Truncate(tuple(r.uint32() for _ in range(count)), bool(options & 1), bool(options & 2))
    if kind == "M":
        flags, lsn, prefix = r.byte(), r.int64(), r.string()
        return Message(bool(flags & 1), lsn, prefix, r.take(r.int32()))
    if kind == "O":
        return Origin(lsn=r.int64(), name=r.string())
    raise DecodeError(f"unknown pgoutput message {kind!r}")
