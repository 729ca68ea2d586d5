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
    batches = [pa.RecordBatch.from_pydict({"secret": [f"s{i}-{j}" for j in range(50)], "plain": [str(i)] * 50})
               for i in range(5)]

    out = list(encrypt_columns(batches, ["secret"], raw_key(KEY.decode()), workers=2, warm_up=False))

    assert [b.column("plain").to_pylist() for b in out] == [b.column("plain").to_pylist() for b in batches]
    assert [decrypt(b.column("secret").to_pylist()) for b in out] == [b.column("secret").to_pylist() for b in batches]


def test_a_stream_encrypts_here_while_the_workers_start_and_without_columns_passes_through_whole():
    batches = [pa.RecordBatch.from_pydict({"secret": [f"s{i}"], "plain": [str(i)]}) for i in range(30)]

    out = list(encrypt_columns(batches, ["secret"], raw_key(KEY.decode()), workers=1))
    untouched = list(encrypt_columns(batches, [], raw_key(KEY.decode())))

    assert [decrypt(b.column("secret").to_pylist())[0] for b in out] == [f"s{i}" for i in range(30)]
    assert untouched == batches
