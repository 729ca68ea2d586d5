"""Whole-column Fernet: the exact tokens of the Fernet specification and of the cryptography
library, IVs from the OS that never repeat across processes, on one core or a process pool (no servers)."""

import base64
import inspect
import multiprocessing
import os
from datetime import datetime
from unittest import mock

import pyarrow as pa
from cryptography.fernet import Fernet, MultiFernet

from dw_platform.lib.fernet_batch import encrypt_array, encrypt_columns, raw_key

KEY = Fernet.generate_key()
VALUES = ["", "a", "x" * 15, "y" * 16, "z" * 100, "José Müller", "two\r\nlines", None, "ab", "abc"]
# Every length from empty to four blocks (each padding size, block boundaries), multi-byte text, long values.
LENGTHS = ["q" * n for n in range(65)] + ["€" * 11, "€" * 16, "ü" * 33, "\x00\xff", "k" * 1000, None]

# The Fernet specification's generation vector (github.com/fernet/spec, generate.json; the same in
# pyca/cryptography's vectors/cryptography_vectors/fernet/generate.json): key, time and IV fixed.
SPEC = {
    "token": "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==",
    "now": "1985-10-26T01:20:00-07:00",
    "iv": list(range(16)),
    "src": "hello",
    "secret": "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=",
}


def decrypt(tokens, key=KEY):
    fernet = MultiFernet([Fernet(Fernet.generate_key()), Fernet(key)])
    return [None if t is None else fernet.decrypt(t.encode()).decode() for t in tokens]


def time_and_iv(token: str) -> tuple[int, bytes]:
    """A Fernet token's timestamp and IV (version byte, 8-byte time, 16-byte IV, ...)."""
    raw = base64.urlsafe_b64decode(token)
    return int.from_bytes(raw[1:9], "big"), raw[9:25]


def library_token(key: bytes, value: str, token: str) -> str:
    """The token cryptography's own Fernet makes for `value` at `token`'s time with `token`'s IV."""
    timestamp, iv = time_and_iv(token)
    with mock.patch("os.urandom", return_value=iv):  # Fernet.encrypt_at_time draws its IV there
        return Fernet(key).encrypt_at_time(value.encode(), timestamp).decode()


def assert_library_tokens(tokens: list, values: list, key: bytes = KEY) -> None:
    assert len(tokens) == len(values)
    for token, value in zip(tokens, values):
        if value is None:
            assert token is None
        else:
            assert token == library_token(key, value, token), value
            assert Fernet(key).decrypt(token.encode()).decode() == value


def test_the_batch_path_makes_the_fernet_specification_s_token_for_its_key_time_and_iv():
    now = int(datetime.fromisoformat(SPEC["now"]).timestamp())
    fixed_iv = bytes(SPEC["iv"])

    token = encrypt_array(
        raw_key(SPEC["secret"]), pa.array([SPEC["src"]]), now=now, random_bytes=lambda n: fixed_iv * (n // 16)
    ).to_pylist()[0]

    assert token == SPEC["token"]
    # verify.json: the token read back 1 s later with a 60 s TTL gives the source text.
    assert Fernet(SPEC["secret"]).decrypt_at_time(token.encode(), ttl=60, current_time=now + 1) == b"hello"


def test_every_batch_token_is_byte_for_byte_the_library_s_token_for_its_time_and_iv():
    tokens = encrypt_array(raw_key(KEY.decode()), pa.array(LENGTHS)).to_pylist()
    assert_library_tokens(tokens, LENGTHS)
    # Values grouped by padded length must keep their own IVs: fixed, distinct IVs per draw.
    draws = iter(range(1, 1000))

    def counter(n: int) -> bytes:
        return b"".join(next(draws).to_bytes(16, "big") for _ in range(n // 16))

    fixed = encrypt_array(raw_key(KEY.decode()), pa.array(LENGTHS), now=1_700_000_000, random_bytes=counter)
    assert_library_tokens(fixed.to_pylist(), LENGTHS)
    assert {time_and_iv(t)[0] for t in fixed.to_pylist() if t} == {1_700_000_000}


def test_tokens_made_by_the_process_pool_are_the_library_s_tokens():
    batches = [pa.RecordBatch.from_pydict({"secret": LENGTHS, "plain": [str(i)] * len(LENGTHS)}) for i in range(6)]

    out = list(encrypt_columns(batches, ["secret"], raw_key(KEY.decode()), workers=2, warm_up=False))

    for batch in out:
        assert_library_tokens(batch.column("secret").to_pylist(), LENGTHS)


def _ivs_of_a_child(queue) -> None:
    tokens = encrypt_array(raw_key(KEY.decode()), pa.array(["same"] * 5_000), now=0).to_pylist()
    queue.put((os.getpid(), [time_and_iv(t)[1] for t in tokens]))


def test_ivs_come_from_the_os_csprng_and_never_repeat_across_processes():
    """Equal values at the same second in different processes still get different IVs: the pool's
    workers (spawned) and forked children (which copy any random state a process keeps in memory)."""
    assert inspect.signature(encrypt_array).parameters["random_bytes"].default is os.urandom
    batches = [pa.RecordBatch.from_pydict({"secret": ["same"] * 2_000}) for _ in range(10)]
    pooled = [
        time_and_iv(t)[1]
        for batch in encrypt_columns(batches, ["secret"], raw_key(KEY.decode()), workers=2, warm_up=False)
        for t in batch.column("secret").to_pylist()
    ]
    children = []
    for method in ("fork", "spawn"):
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        processes = [context.Process(target=_ivs_of_a_child, args=(queue,)) for _ in range(2)]
        for process in processes:
            process.start()
        children += [queue.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
    assert len({pid for pid, _ in children}) == 4
    ivs = pooled + [iv for _, child in children for iv in child]
    assert len(ivs) == 20_000 + 4 * 5_000
    assert len(set(ivs)) == len(ivs), "an IV repeated"


def test_every_token_decrypts_with_the_library_to_its_value_and_nulls_stay_null():
    tokens = encrypt_array(raw_key(KEY.decode()), pa.array(VALUES)).to_pylist()
    assert decrypt(tokens) == VALUES
    assert Fernet(KEY).extract_timestamp(tokens[0].encode()) > 0


def test_equal_values_get_different_tokens_and_a_slice_encrypts_only_its_values():
    tokens = encrypt_array(raw_key(KEY.decode()), pa.array(["same"] * 100)).to_pylist()
    assert len(set(tokens)) == 100
    assert decrypt(encrypt_array(raw_key(KEY.decode()), pa.array(VALUES).slice(3, 4)).to_pylist()) == VALUES[3:7]
    assert encrypt_array(raw_key(KEY.decode()), pa.array([None, None], pa.string())).null_count == 2


def test_batches_encrypted_by_the_process_pool_come_back_in_order_with_other_columns_untouched():
    batches = [
        pa.RecordBatch.from_pydict({"secret": [f"s{i}-{j}" for j in range(50)], "plain": [str(i)] * 50})
        for i in range(5)
    ]

    out = list(encrypt_columns(batches, ["secret"], raw_key(KEY.decode()), workers=2, warm_up=False))

    assert [b.column("plain").to_pylist() for b in out] == [b.column("plain").to_pylist() for b in batches]
    assert [decrypt(b.column("secret").to_pylist()) for b in out] == [b.column("secret").to_pylist() for b in batches]


def test_a_stream_encrypts_here_while_the_workers_start_and_without_columns_passes_through_whole():
    batches = [pa.RecordBatch.from_pydict({"secret": [f"s{i}"], "plain": [str(i)]}) for i in range(30)]

    out = list(encrypt_columns(batches, ["secret"], raw_key(KEY.decode()), workers=1))
    untouched = list(encrypt_columns(batches, [], raw_key(KEY.decode())))

    assert [decrypt(b.column("secret").to_pylist())[0] for b in out] == [f"s{i}" for i in range(30)]
    assert untouched == batches


def test_the_workers_exit_when_the_loader_is_killed():
    """kill -9 of the process reading a file (a killed run) leaves no encryption worker behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = f"""
import multiprocessing, time
import pyarrow as pa
from dw_platform.lib.fernet_batch import encrypt_columns, raw_key

def batches():
    while True:
        yield pa.RecordBatch.from_pydict({{"secret": ["x" * 20] * 1000}})

if __name__ == "__main__":
    for i, _ in enumerate(encrypt_columns(batches(), ["secret"], raw_key({KEY.decode()!r}), workers=2, warm_up=False)):
        if i == 10:
            print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
            time.sleep(600)
"""
    loader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in loader.stdout.readline().split()]
    assert len(workers) == 2
    loader.send_signal(signal.SIGKILL)
    loader.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    states = {pid: open(f"/proc/{pid}/status").read().split("\n")[1:7] for pid in workers if alive(pid)}
    assert not states, f"encryption workers outlived their loader: {states}"
    for pid in workers:  # nothing left if the assertion failed
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
