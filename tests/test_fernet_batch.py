"""Whole-column Fernet: tokens the cryptography library decrypts, on one core or a process pool (no servers)."""

import pyarrow as pa
from cryptography.fernet import Fernet, MultiFernet

from dw_platform.lib.fernet_batch import encrypt_array, encrypt_columns, raw_key

KEY = Fernet.generate_key()
VALUES = ["", "a", "x" * 15, "y" * 16, "z" * 100, "José Müller", "two\r\nlines", None, "ab", "abc"]


def decrypt(tokens, key=KEY):
    fernet = MultiFernet([Fernet(Fernet.generate_key()), Fernet(key)])
    return [None if t is None else fernet.decrypt(t.encode()).decode() for t in tokens]


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
