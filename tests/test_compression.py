"""Compressed files as they arrive: gzip, bzip2 and zstd, decompressed as a stream."""

import bz2
import gzip
import os

import pytest
import zstandard

from dw_platform.lib import compression
from dw_platform.lib.compression import CompressionError, decompressed, plain_name

LINES = b"".join(
    b'192.0.2.%d - - [23/Nov/2026:10:15:32 +0000] "GET / HTTP/1.1" 200 %d\n' % (i % 250, i) for i in range(20_000)
)
COMPRESS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("suffix", list(COMPRESS))
@pytest.mark.parametrize("size", [1, 333, 1 << 20])
def test_each_format_decompresses_to_the_original_bytes_in_any_chunking(suffix, size):
    packed = COMPRESS[suffix](LINES)
    assert (
        b"".join(decompressed(chunked(packed, size if size > 1 or len(packed) < 50_000 else 7), "a.log" + suffix))
        == LINES
    )


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_concatenated_members_are_one_file(suffix):
    packed = COMPRESS[suffix](b"first\n") + COMPRESS[suffix](b"second\n")
    assert b"".join(decompressed([packed], "a" + suffix)) == b"first\nsecond\n"


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_a_compressed_file_cut_short_fails_saying_so(suffix):
    packed = COMPRESS[suffix](LINES)
    with pytest.raises(CompressionError, match="cut short"):
        b"".join(decompressed(chunked(packed[: len(packed) // 2], 4096), "a.log" + suffix))


def test_memory_stays_flat_however_well_the_file_compresses(monkeypatch):
    monkeypatch.setattr(compression, "OUT_BYTES", 1 << 16)
    for suffix, compress in COMPRESS.items():
        packed = compress(b"\0" * (64 << 20))  # 64 MiB of zeros compress to a few KiB
        sizes = [len(c) for c in decompressed([packed], "zeros" + suffix)]
        assert sum(sizes) == 64 << 20 and max(sizes) <= (32 << 20 if suffix == ".zst" else 1 << 16), suffix


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "access.log.gz",
            LINES,
            r"access.log.gz claims gzip compression \(its name ends in .gz\) but is not compressed",
        ),
        ("access.log.bz2", gzip.compress(LINES), "access.log.bz2 claims bzip2 compression .* but is gzip"),
        ("access.log.zst", b"", "access.log.zst claims zstd compression .* but is empty"),
    ],
)
def test_a_file_claiming_a_compression_it_does_not_have_fails_saying_so(name, data, message):
    with pytest.raises(CompressionError, match=message):
        b"".join(decompressed([data], name))


def test_corrupt_bytes_after_a_valid_header_fail_saying_what_they_look_like():
    packed = gzip.compress(os.urandom(5000))
    with pytest.raises(CompressionError, match="starts like gzip but does not decompress"):
        b"".join(decompressed([packed[:20] + b"\xff" * 200 + packed[220:]], "x.gz"))


def test_plain_files_pass_through_untouched_and_a_compressed_one_is_known_by_its_bytes():
    assert b"".join(decompressed(chunked(LINES, 100), "access.log")) == LINES
    assert b"".join(decompressed([gzip.compress(LINES)], "access.log.1")) == LINES  # no suffix: the bytes tell
    assert b"".join(decompressed([b"BZh is a host name"], "")) == b"BZh is a host name"
    assert list(decompressed([], "empty.log")) == []
    assert plain_name("2026-11-23/access.log.1.gz") == "2026-11-23/access.log.1" and plain_name("a.csv") == "a.csv"
