"""Seeded fuzz tests: every file-based domain is fed random byte mutations of a good file (NUL and
other control bytes, bytes that are not UTF-8, stray quotes and line ends, long runs, cuts) and
loaded into the real PostgreSQL through the same function its asset calls. For every case the
load succeeds with loaded + quarantined = the lines (records, documents) of the file, counted
here independently of the parsers, or fails with a clear message naming the line (or saying what
the whole file is). Hypothesis runs a fixed, derandomized set of cases, so a run is repeatable
and bounded in time.
"""

import json
import re
from datetime import date, datetime, time, timedelta, timezone

import dagster as dg
import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from dw_platform.defs.sales.assets import load_blob
from dw_platform.defs.softcart.assets import load_log
from dw_platform.defs.video.assets import load_content, load_csv, parse_content
from dw_platform.lib import migrations
from dw_platform.lib.bronze import LoadScope
from dw_platform.lib.crypto import Cipher
from dw_platform.lib.documents import MongoDocuments
from dw_platform.lib.json_flatten import DocumentError
from dw_platform.sales.ingest import SALES, SCHEMA
from dw_platform.samples import sales as sales_sample
from dw_platform.samples import softcart as softcart_sample
from dw_platform.samples import video as video_sample
from dw_platform.softcart.ingest import QUARANTINE, WEB_ACCESS_LOG
from dw_platform.video.ingest import USERS, USERS_SCHEMA

pytestmark = pytest.mark.integration

HOSTILE = [
    b"\x00",
    b"\xff",
    b"\xc3",  # the first byte of a two-byte character, alone
    b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
    b"\x1b[31m",
    b"\x7f",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b'"',
    b'""',
    b",",
    b"\\",
    b"\xef\xbb\xbf",
    b"x" * 3000,
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
]
MUTATION = st.tuples(
    st.sampled_from(["insert", "replace", "delete"]),
    st.integers(min_value=0, max_value=1 << 20),
    st.one_of(st.sampled_from(HOSTILE), st.binary(min_size=1, max_size=6)),
)
MUTATIONS = st.tuples(st.lists(MUTATION, min_size=1, max_size=5), st.booleans())  # (mutations, cut the end)
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # a fixed seed: the same cases every run
    database=None,
    # One warehouse for all the cases of a test; each case loads under its own partition key.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What a load that fails may say: the line, or what the whole file is.
CLEAR_FAILURE = re.compile(r"line \d+|the file (is|looks like)|claims .* compression|does not decompress|cut short")


def mutate(data: bytes, case: tuple) -> bytes:
    mutations, cut = case
    for op, at, payload in mutations:
        at %= len(data) + 1
        if op == "insert":
            data = data[:at] + payload + data[at:]
        elif op == "replace":
            data = data[:at] + payload + data[at + len(payload) :]
        else:
            data = data[:at] + data[at + len(payload) :]
    return data[: len(data) * 2 // 3] if cut else data


def lines(data: bytes) -> int:
    """Lines of a log: every LF ends one; a last line without LF counts."""
    return data.count(b"\n") + (bool(data) and not data.endswith(b"\n"))


def csv_records(data: bytes) -> int:
    """Non-blank records after the header, by RFC 4180 as a person reads it: a quote opens a field
    only at its start; inside quotes a doubled quote is a quote and line ends (LF, CRLF, CR) are
    data; outside they end the record. A quoted field never closed runs to the end of the file."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    records, quoted, field_start, empty, i = 0, False, True, True, 0
    while i < len(data):
        c = data[i : i + 1]
        if quoted:
            if c == b'"':
                if data[i + 1 : i + 2] == b'"':
                    i += 1
                else:
                    quoted = False
        elif c in b"\r\n":
            if c == b"\r" and data[i + 1 : i + 2] == b"\n":
                i += 1
            records += not empty
            empty, field_start = True, True
        else:
            quoted = c == b'"' and field_start
            field_start = c == b","
            empty = False
        i += 1
    records += not empty
    return max(records - 1, 0)


def json_lines(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip(b" \t\r\n"))


def counts(conn, table, source_column: str, quarantine, quarantine_column: str, source: str) -> tuple[int, int]:
    loaded = conn.execute(
        sql.SQL("select count(*) from {} where {} = %s").format(table, sql.Identifier(source_column)), (source,)
    ).fetchone()[0]
    held = conn.execute(
        sql.SQL("select count(*) from {} where {} = %s").format(quarantine, sql.Identifier(quarantine_column)),
        (source,),
    ).fetchone()[0]
    return loaded, held


def assert_clear(failure) -> None:
    assert CLEAR_FAILURE.search(failure.description), failure.description
    event("the file failed clearly")


@pytest.fixture
def identical_files_allowed(monkeypatch):
    """Cases may repeat a file's bytes; refusing identical files has tests of its own."""
    for domain in ("SALES", "SOFTCART_WEBLOGS", "VIDEO"):
        monkeypatch.setenv(f"DW_{domain}_ACCEPT_IDENTICAL_FILES", "true")


GOOD_LOG = softcart_sample.access_log(120, datetime(2026, 11, 23, 8, tzinfo=timezone.utc))


@FUZZ
@given(case=MUTATIONS)
def test_an_access_log_with_any_damage_loads_every_line_or_quarantines_it(
    case, warehouse_resource, identical_files_allowed
):
    data = mutate(GOOD_LOG, case)
    key = f"fuzz/{hash((data, repr(case))) & 0xFFFFFFFF:08x}.log"
    with warehouse_resource.connect() as conn:
        try:
            load_log(conn, [data[i : i + 997] for i in range(0, len(data), 997)], key, key)
        except dg.Failure as failure:
            assert_clear(failure)
            return
        loaded, held = counts(conn, WEB_ACCESS_LOG.ident, "_bronze_source_file", QUARANTINE, "source_file", key)
    event(f"loaded, {'some' if held else 'no'} lines quarantined")
    assert loaded + held == lines(data)


GOOD_SALES = sales_sample.to_csv(sales_sample.HEADER, list(sales_sample.rows(40, date(2026, 11, 20))))


@FUZZ
@given(case=MUTATIONS)
def test_a_sales_csv_with_any_damage_loads_every_record_or_quarantines_it(
    case, warehouse_resource, identical_files_allowed
):
    data = mutate(GOOD_SALES, case)
    key = f"fuzz/{hash((data, repr(case))) & 0xFFFFFFFF:08x}.csv"
    with warehouse_resource.connect() as conn:
        try:
            load_blob(conn, [data], key, CIPHER)  # one chunk, one batch: no encryption pool to start
        except dg.Failure as failure:
            assert_clear(failure)
            return
        loaded, held = counts(
            conn,
            SALES.ident,
            "_bronze_source_file",
            sql.Identifier(*SCHEMA.quarantine_table.split(".")),
            "blob_name",
            "incoming/" + key,
        )
    event(f"loaded, {'some' if held else 'no'} records quarantined")
    assert loaded + held == csv_records(data)


CIPHER = Cipher(Fernet.generate_key().decode())
GOOD_USERS = video_sample.to_csv(video_sample.USERS_HEADER, video_sample.users(date(2026, 11, 20)))
FUZZ_DAYS = iter(range(10_000))


def one_day() -> LoadScope:
    """A day of its own for each case (a video load replaces its day)."""
    day = date(2000, 1, 1) + timedelta(days=next(FUZZ_DAYS))
    start = datetime.combine(day, time(), timezone.utc)
    return LoadScope.time_window([day.isoformat()], "arrival_date", start, start + timedelta(days=1))


@FUZZ
@given(case=MUTATIONS)
def test_a_video_users_csv_with_any_damage_loads_every_record_or_quarantines_it(
    case, warehouse_resource, identical_files_allowed
):
    data = mutate(GOOD_USERS, case)
    source = f"fuzz/{hash((data, repr(case))) & 0xFFFFFFFF:08x}/users.csv"
    with warehouse_resource.connect() as conn:
        try:
            load_csv(
                conn, [data[i : i + 997] for i in range(0, len(data), 997)], USERS, USERS_SCHEMA, one_day(), source
            )
        except dg.Failure as failure:
            assert_clear(failure)
            return
        loaded, held = counts(
            conn,
            USERS.ident,
            "_bronze_source_file",
            sql.Identifier("bronze", "video_quarantine"),
            "source_file",
            source,
        )
    event(f"loaded, {'some' if held else 'no'} records quarantined")
    assert loaded + held == csv_records(data)


GOOD_CONTENT = video_sample.content_file(video_sample.content_documents())
GOOD_ARRAY = json.dumps(video_sample.content_documents(), indent=1).encode()


@FUZZ
@given(case=MUTATIONS, array=st.booleans())
def test_a_content_json_file_with_any_damage_loads_every_document_or_quarantines_it(
    case, array, warehouse_resource, identical_files_allowed
):
    data = mutate(GOOD_ARRAY if array else GOOD_CONTENT, case)
    source = f"fuzz/{hash((data, repr(case))) & 0xFFFFFFFF:08x}/content.json"
    scope = one_day()
    with warehouse_resource.connect() as conn:
        migrations.migrate(conn)
        try:
            parsed = parse_content(conn, source, date.fromisoformat(scope.label), data)
        except DocumentError as exc:
            assert re.match(r"line \d+: not a JSON array", str(exc)), exc
            event("the file failed clearly")
            return
        load_content(conn, parsed, scope, source, "bronze/content", None, MongoDocuments(database="x", collection="y"))
        loaded = conn.execute(
            "select count(*) from bronze.content where _bronze_source_file = %s", (source,)
        ).fetchone()[0]
        held = conn.execute(
            "select count(*) from bronze.video_quarantine where source_file = %s", (source,)
        ).fetchone()[0]
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape")
    expected = len(json.loads(text, strict=False)) if text.lstrip().startswith("[") else json_lines(data)
    event(f"loaded, {'some' if held else 'no'} documents quarantined")
    assert loaded + held == expected
