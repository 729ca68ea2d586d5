"""Compressed files as they arrive: gzip (`.gz`, what logrotate leaves), bzip2 (`.bz2`) and zstd
(`.zst`), decompressed as a stream.

`decompressed(chunks, name)` gives the original bytes of a file a chunk at a time, whatever it
is: a compressed file is recognised by its first bytes (its magic number), so a plain file passes
through untouched. Memory stays flat: every step hands out at most `OUT_BYTES`, however well the
input compresses. A file whose name claims a compression its bytes do not have (`access.log.gz`
holding plain text), or whose compressed stream is corrupt or cut short, raises
`CompressionError` saying so.
"""

from __future__ import annotations

import bz2
import re
import zlib
from collections.abc import Iterable, Iterator

import zstandard

OUT_BYTES = 4 << 20

# suffix: (name, how the file starts)
FORMATS = {
    ".gz": ("gzip", re.compile(rb"\x1f\x8b\x08")),
    # "BZh", the block size, then the magic of the first block (or of the end of an empty stream)
    ".bz2": ("bzip2", re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")),
    ".zst": ("zstd", re.compile(rb"\x28\xb5\x2f\xfd")),
}
HEAD_BYTES = 10  # enough of the start to tell them apart


class CompressionError(ValueError):
    """The file's compression is not what it claims, or its compressed stream is broken; retrying
    reads the same bytes."""

    transient = False


def claimed(name: str) -> str | None:
    """The compression a file's name claims (its suffix), or None."""
    return next((suffix for suffix in FORMATS if name.lower().endswith(suffix)), None)


def plain_name(name: str) -> str:
    """The name without its compression suffix (`access.log.1.gz` -> `access.log.1`)."""
    suffix = claimed(name)
    return name[: -len(suffix)] if suffix else name


def detect(head: bytes) -> str | None:
    """The compression suffix of the format whose magic number `head` (the file's first
    HEAD_BYTES) starts with, or None."""
    return next((suffix for suffix, (_, magic) in FORMATS.items() if magic.match(head)), None)


def decompressed(chunks: Iterable[bytes], name: str = "") -> Iterator[bytes]:
    """The original bytes of `chunks` (a file called `name`), decompressed if they are compressed."""
    iterator = iter(chunks)
    head = b""
    for chunk in iterator:
        head += chunk
        if len(head) >= HEAD_BYTES:
            break
    found = detect(head)
    suffix = claimed(name)
    if suffix and found != suffix:
        what = FORMATS[suffix][0]
        has = f"is {FORMATS[found][0]}" if found else "is not compressed" if head else "is empty"
        raise CompressionError(f"{name} claims {what} compression (its name ends in {suffix}) but {has}")
    rest = _prepend(head, iterator)
    if found is None:
        yield from (c for c in rest if c)
        return
    what = FORMATS[found][0]
    try:
        yield from {".gz": _gunzip, ".bz2": _bunzip2, ".zst": _unzstd}[found](rest)
    except (zlib.error, OSError, EOFError, zstandard.ZstdError) as exc:
        raise CompressionError(f"{name or 'the file'} starts like {what} but does not decompress: {exc}") from None


def _prepend(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """gzip, one member or several (concatenated .gz files are one valid .gz file)."""
    return _members(chunks, lambda: zlib.decompressobj(wbits=31), "gzip", padding=True)


def _bunzip2(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """bzip2, one stream or several (pbzip2 and concatenated files write several)."""
    return _members(chunks, bz2.BZ2Decompressor, "bzip2")


def _members(chunks: Iterable[bytes], new, what: str, padding: bool = False) -> Iterator[bytes]:
    """Decompress concatenated streams with `new()` decompressors (zlib's or bz2's), at most
    OUT_BYTES per step. gzip allows zero bytes between members (`padding`)."""
    decompressor, fed = new(), False
    for data in chunks:
        while data:
            fed = True
            yield from _steps(decompressor, data)
            if not decompressor.eof:
                break
            data = decompressor.unused_data.lstrip(b"\x00") if padding else decompressor.unused_data
            decompressor, fed = new(), False
    if fed:
        raise CompressionError(f"the {what} stream is cut short (its last member does not end)")


def _steps(decompressor, data: bytes) -> Iterator[bytes]:
    """The output of one input chunk, OUT_BYTES at a time."""
    if isinstance(decompressor, bz2.BZ2Decompressor):
        out = decompressor.decompress(data, OUT_BYTES)
        while True:
            if out:
                yield out
            if decompressor.eof or decompressor.needs_input:
                return
            out = decompressor.decompress(b"", OUT_BYTES)
    out = decompressor.decompress(data, OUT_BYTES)
    while True:
        if out:
            yield out
        if not decompressor.unconsumed_tail:
            return
        out = decompressor.decompress(decompressor.unconsumed_tail, OUT_BYTES)


ZSTD_IN_BYTES = 1 << 10  # input per step: zstd has no output limit per call, at most ~32 MiB come of 1 KiB


def _unzstd(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """zstd, one frame or several."""
    new = zstandard.ZstdDecompressor().decompressobj
    decompressor, fed = new(), False
    for chunk in chunks:
        for start in range(0, len(chunk), ZSTD_IN_BYTES):
            data = chunk[start : start + ZSTD_IN_BYTES]
            while data:
                fed = True
                if out := decompressor.decompress(data):
                    yield out
                if not decompressor.eof:
                    break
                data = decompressor.unused_data
                decompressor, fed = new(), False
    if fed:
        raise CompressionError("the zstd stream is cut short (its last frame does not end)")
