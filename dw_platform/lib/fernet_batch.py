"""Fernet tokens for whole Arrow columns, and a process pool that encrypts batches on every core.

`cryptography`'s `Fernet.encrypt` costs ~5 µs a value here, most of it setting up an OpenSSL
cipher and HMAC context per call. `encrypt_array` makes the same tokens (Fernet spec: version
0x80, timestamp, random IV, AES-128-CBC with PKCS7 padding, HMAC-SHA256, urlsafe base64) for a
whole column at ~1 µs a value: one AES context and one HMAC key for all values; the values are
padded in one Arrow join and grouped by padded length, and CBC runs block position by block
position over a group (C_j = AES(P_j xor C_{j-1}), C_0 = IV), each AES call covering the whole
group. Every token is byte for byte the one `cryptography`'s Fernet makes for the same key, time
and IV (tested, with the Fernet specification's own test vector); decryption and key rotation
stay the library's. Each IV is 16 bytes from the OS CSPRNG (`os.urandom`), drawn in the process
that encrypts, so the pool's workers never share a random state.

This module imports no Dagster: process-pool workers import it on start.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC

_VERSION = 0x80
_BLOCK = 16
_PADDING = pa.array([bytes([size]) * size for size in range(_BLOCK + 1)], pa.binary())  # PKCS7, by pad size


def encrypt_array(
    key: bytes, values: pa.Array, now: int | None = None, random_bytes: Callable[[int], bytes] = os.urandom
) -> pa.Array:
    """Fernet tokens (text) for every value of a string/binary column under the 32-byte raw
    `key` (signing half first, as in Fernet); nulls stay null. `now` (Unix seconds) and
    `random_bytes` (the IVs' source) are fixed only by known-answer tests."""
    values = values.cast(pa.binary()) if values.type != pa.binary() else values
    n = len(values)
    valid = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if not valid.any():
        return pa.nulls(n, pa.string())
    signing, encryption = key[:16], key[16:]
    lengths = pc.fill_null(pc.binary_length(values), 0).to_numpy()
    pad = _BLOCK - lengths % _BLOCK  # PKCS7 always pads, 1 to 16 bytes
    padded = pc.binary_join_element_wise(values, _PADDING.take(pa.array(pad)), b"")
    blocks = (lengths + pad) // _BLOCK
    header = np.frombuffer(
        bytes([_VERSION]) + int(now if now is not None else time.time()).to_bytes(8, "big"), dtype=np.uint8
    )
    aes = Cipher(algorithms.AES(encryption), modes.ECB()).encryptor()
    sign = _signer(signing)
    groups, order = [], []
    for k in np.unique(blocks[valid]).tolist():
        rows = np.flatnonzero(valid & (blocks == k))
        m, width = len(rows), k * _BLOCK
        group = padded.take(pa.array(rows))
        start = int(np.frombuffer(group.buffers()[1], dtype=np.int32, count=1, offset=group.offset * 4)[0])
        plain = np.frombuffer(group.buffers()[2], dtype=np.uint8, count=m * width, offset=start).reshape(m, width)
        iv = np.frombuffer(random_bytes(m * _BLOCK), dtype=np.uint8).reshape(m, _BLOCK)
        size = len(header) + _BLOCK + width
        token = np.zeros((m, -(-(size + 32) // 3) * 3), dtype=np.uint8)  # zero-padded to whole base64 groups
        token[:, : len(header)] = header
        token[:, len(header) : len(header) + _BLOCK] = iv
        previous = iv
        for j in range(k):  # CBC, one block position of every value per AES call
            mixed = np.bitwise_xor(plain[:, j * _BLOCK : (j + 1) * _BLOCK], previous)
            previous = np.frombuffer(aes.update(mixed.tobytes()), dtype=np.uint8).reshape(m, _BLOCK)
            start = len(header) + _BLOCK + j * _BLOCK
            token[:, start : start + _BLOCK] = previous
        messages = np.ascontiguousarray(token[:, :size]).view(f"V{size}").ravel().tolist()  # one bytes each
        token[:, size : size + 32] = np.frombuffer(
            b"".join([sign(message) for message in messages]), dtype=np.uint8
        ).reshape(m, 32)
        groups.append(_base64_rows(token, size + 32))
        order.append(rows)
    tokens = pa.concat_arrays(groups)
    position = np.full(n, -1, dtype=np.int64)
    position[np.concatenate(order)] = np.arange(len(tokens))
    return tokens.take(pa.array(position, mask=position < 0))


def _signer(key: bytes):
    """HMAC-SHA256 under `key`, the key set up once and copied per value."""
    base = HMAC(key, hashes.SHA256())

    def sign(message: bytes) -> bytes:
        h = base.copy()
        h.update(message)
        return h.finalize()

    return sign


def _base64_rows(rows: np.ndarray, size: int) -> pa.Array:
    """urlsafe base64 (with = padding) of the first `size` bytes of each row of a uint8 matrix, as an
    Arrow string array: the rows, zero-padded to whole 3-byte groups, encode as one string, then
    the padding becomes '='."""
    m, width = rows.shape
    text = np.frombuffer(bytearray(base64.urlsafe_b64encode(rows)), dtype=np.uint8).reshape(m, -1)
    missing = width - size
    if missing:
        text[:, -missing:] = ord("=")
    return pa.Array.from_buffers(
        pa.string(), m, [None, pa.py_buffer(np.arange(m + 1, dtype=np.int32) * text.shape[1]), pa.py_buffer(text)]
    )


def raw_key(fernet_key: str) -> bytes:
    """The 32 bytes of a Fernet key (urlsafe base64 text)."""
    key = base64.urlsafe_b64decode(fernet_key.strip())
    if len(key) != 32:
        raise ValueError("a Fernet key is 32 url-safe base64-encoded bytes")
    return key


# ---------------------------------------------------------------- encryption on every core

_worker_key: bytes | None = None


def _start_worker(key: bytes, parent: int) -> None:
    global _worker_key
    _worker_key = key
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose loader was killed (kill -9, OOM) would wait on its task queue forever: the
    queue's pipe stays open in the worker itself. Leave once the parent is gone (even if it died
    while this worker was still starting)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _encrypt_in_worker(arrays: list[pa.Array]) -> list[pa.Array]:
    return [encrypt_array(_worker_key, a) for a in arrays]


def encrypt_columns(
    batches: Iterable[pa.RecordBatch],
    columns: Sequence[str],
    key: bytes,
    workers: int | None = None,
    warm_up: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Yield each batch with `columns` replaced by their Fernet tokens, in order.

    From the second batch on, a pool of worker processes (one per core; spawned, so no thread
    state is forked) encrypts a few batches ahead while the caller keeps reading and loading.
    Until the workers have started (spawning imports their modules: a second or more), batches
    are encrypted here, so a small file never waits for them (`warm_up=False` queues at once).
    Stopping early (an error, a closed generator) cancels what is queued.
    """

    def here(batch: pa.RecordBatch) -> pa.RecordBatch:
        return _replace(batch, columns, [encrypt_array(key, batch.column(c)) for c in columns])

    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        return
    if not columns:
        yield first
        yield from iterator
        return
    second = next(iterator, None)
    if second is None:
        yield here(first)
        return
    workers = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(key, os.getpid()),
    )
    started = pool.submit(_started)
    queued: deque[tuple[pa.RecordBatch, Future]] = deque()
    finished = False
    try:
        for batch in _chain(first, second, iterator):
            if warm_up and not queued and not started.done():
                yield here(batch)
                continue
            queued.append((batch, pool.submit(_encrypt_in_worker, [batch.column(c) for c in columns])))
            while len(queued) > 2 * workers:
                done, future = queued.popleft()
                yield _replace(done, columns, future.result())
        while queued:
            done, future = queued.popleft()
            yield _replace(done, columns, future.result())
        finished = True
    finally:
        # Idle workers exit at once; after an early stop, workers still starting exit on their own.
        pool.shutdown(wait=finished, cancel_futures=not finished)


def _started() -> None:
    """A first task: done once a worker is up."""


def _chain(first, second, rest):
    yield first
    yield second
    yield from rest


def _replace(batch: pa.RecordBatch, columns: Sequence[str], arrays: list[pa.Array]) -> pa.RecordBatch:
    for name, array in zip(columns, arrays):
        batch = batch.set_column(batch.schema.get_field_index(name), name, array)
    return batch


__all__ = ["encrypt_array", "encrypt_columns", "raw_key"]
