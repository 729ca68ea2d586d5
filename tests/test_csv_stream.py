"""Streaming CSV: framing, byte-exact values, bad records, declared rules and validation (no servers)."""

import gzip
from dataclasses import replace

import pyarrow as pa
import pytest

from dw_platform.lib.csv_stream import ColumnSpec, CsvFormatError, CsvReader, CsvSchema, count_records
from dw_platform.sales.ingest import SCHEMA

HEADER = b"order_id,order_date,customer_email,customer_name,product,category,region,quantity,unit_price,currency"
TEXT = CsvSchema("t.t", "t.q", (ColumnSpec("a", "a", required=True), ColumnSpec("b", "b"), ColumnSpec("c", "c")))


def chunked(data: bytes, size: int):
    """Small chunks, so records, quotes, CRLF pairs and multi-byte characters straddle chunk borders."""
    return (data[i : i + size] for i in range(0, len(data), size))


def read(data: bytes, schema: CsvSchema = TEXT, size: int = 7):
    """(rows as dicts with source_line, rejected records) of a file read in `size`-byte chunks."""
    rejected = []
    reader = CsvReader(schema, rejected.append)
    batches = list(reader.batches(chunked(data, size)))
    rows = pa.Table.from_batches(batches).to_pylist() if batches else []
    assert reader.records == reader.rows + reader.rejected == len(rows) + len(rejected)
    assert count_records(chunked(data, size), schema.delimiter, schema.max_record_bytes) == reader.records
    return rows, rejected


@pytest.mark.parametrize("size", [1, 3, 7, 1 << 20])
def test_quoted_delimiters_doubled_quotes_and_line_breaks_inside_quotes_land_byte_for_byte(size):
    data = (
        b'a,b,c\r\n1,"x, y","he said ""hi"""\r\n2,"two\r\nlines",z\r\n3,"lf\nonly","cr\ronly"\r\n'
        b'4,,\r\n5," pad ","\xc2\xa0nbsp\ttab "\r\n'
    )
    rows, rejected = read(data, size=size)
    assert rejected == []
    assert [(r["source_line"], r["a"], r["b"], r["c"]) for r in rows] == [
        (2, "1", "x, y", 'he said "hi"'),
        (3, "2", "two\r\nlines", "z"),
        (5, "3", "lf\nonly", "cr\ronly"),
        (8, "4", "", ""),
        (9, "5", " pad ", "\u00a0nbsp\ttab "),
    ]


def test_old_mac_files_with_cr_line_ends_parse():
    rows, rejected = read(b'a,b,c\r1,"in\rquotes",x\r2,y,z\r')
    assert rejected == [] and [(r["source_line"], r["b"]) for r in rows] == [(2, "in\rquotes"), (4, "y")]


def test_a_bom_is_dropped_blank_lines_are_skipped_and_lines_count_physical_lines():
    rows, _ = read('\ufeffa,b,c\n\n1,é,日本\n\r\n2,"x\ny",z'.encode(), size=1)
    assert [(r["source_line"], r["a"], r["b"], r["c"]) for r in rows] == [(3, "1", "é", "日本"), (5, "2", "x\ny", "z")]


def test_empty_files_a_lone_bom_and_a_header_alone_give_no_rows():
    for data in (b"", b"\xef\xbb\xbf", b"a,b,c\r\n", b"\r\n\n"):
        assert read(data) == ([], [])


def test_stray_quotes_are_quarantined_with_their_raw_bytes_and_the_next_records_load():
    data = b'a,b,c\n1,O"Brien,x\n2,"a"b,x\n3,"ok ""quoted""",x\n4,y,z\n'
    rows, rejected = read(data)
    assert [r["a"] for r in rows] == ["3", "4"] and rows[0]["b"] == 'ok "quoted"'
    assert [(r.line, r.raw) for r in rejected] == [(2, b'1,O"Brien,x\n'), (3, b'2,"a"b,x\n')]
    assert "a quote at byte 4 of the record neither opens nor closes a quoted field" in rejected[0].reason
    assert "a quoted field is followed by other characters" in rejected[1].reason


def test_a_quote_never_closed_quarantines_its_record_to_the_end_of_the_file_and_loads_the_rest():
    good = b"".join(b"%d,x,y\n" % i for i in range(1, 2001))
    rows, rejected = read(b"a,b,c\n" + good + b'9,"open,y\n10,z,z\n', size=4096)
    assert len(rows) == 2000
    assert [(r.line, r.raw) for r in rejected] == [(2002, b'9,"open,y\n10,z,z\n')]
    assert rejected[0].reason == "a quoted field is never closed: the record runs to the end of the file"


def test_a_quote_never_closed_past_the_record_limit_keeps_the_first_bytes_and_flat_memory():
    schema = replace(TEXT, max_record_bytes=1000)
    rows, rejected = read(b'a,b,c\n1,x,y\n2,"open\n' + b"more text\n" * 500, schema, size=64)
    assert len(rows) == 1 and len(rejected) == 1
    assert rejected[0].line == 3 and rejected[0].raw == (b'2,"open\n' + b"more text\n" * 500)[:1000]
    assert "never closed" in rejected[0].reason and "cut to its first 1,000 bytes" in rejected[0].reason


def test_limits_are_counted_and_reported_in_bytes_and_an_over_long_record_is_quarantined_not_fatal():
    schema = replace(TEXT, max_field_bytes=1000, max_record_bytes=5000)
    long_field = "é" * 600  # 600 characters, 1,200 bytes
    long_record = "x" * 6000
    data = f"a,b,c\n1,{long_field},z\n2,{long_record},z\n3,ok,z\n".encode()
    rows, rejected = read(data, schema, size=100)
    assert [r["a"] for r in rows] == ["3"]
    assert [(r.line, r.reason) for r in rejected] == [
        (2, "b: 1,200 bytes, longer than max_field_bytes (1,000)"),
        (3, "the record is longer than max_record_bytes (5,000); raw record cut to its first 5,000 bytes"),
    ]
    assert rejected[0].raw == f"1,{long_field},z\n".encode()


def test_a_valid_multibyte_record_longer_than_a_chunk_loads_whole():
    value = "é" * 600_000  # 1.2 MB of UTF-8
    rows, rejected = read(f'a,b,c\n1,"{value}",z\n'.encode(), size=4 << 20 >> 4)
    assert rejected == [] and rows[0]["b"] == value


def test_bytes_that_are_not_utf8_or_a_nul_quarantine_their_record_only():
    rows, rejected = read(b"a,b,c\n1,Jos\xe9,x\n2,nul\x00,x\n3,ok,x\n")
    assert [r["a"] for r in rows] == ["3"]
    assert [(r.line, r.raw, r.reason) for r in rejected] == [
        (2, b"1,Jos\xe9,x\n", "not UTF-8 text: byte 0xe9 at byte 6 of the record"),
        (3, b"2,nul\x00,x\n", "contains a NUL byte, which PostgreSQL text cannot hold"),
    ]


def test_a_record_with_the_wrong_number_of_fields_is_quarantined():
    rows, rejected = read(b"a,b,c\n1,2\n2,x,y\n3,4,5,6\n")
    assert [r["a"] for r in rows] == ["2"]
    assert [(r.line, r.reason) for r in rejected] == [
        (2, "expected 3 fields, found 2"),
        (4, "expected 3 fields, found 4"),
    ]


def test_gzip_files_are_read_directly_even_in_several_members():
    data = gzip.compress(b"a,b,c\n1,x,y\n") + gzip.compress(b"2,z,z\n")
    rows, _ = read(data, size=5)
    assert [r["a"] for r in rows] == ["1", "2"]
    with pytest.raises(CsvFormatError, match="gzip stream is cut short"):
        read(gzip.compress(b"a,b,c\n1,x,y\n")[:-12])


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ("a,b,c\n1,x,y\n".encode("utf-16"), "UTF-16 text \\(it starts with a UTF-16 byte-order mark\\)"),
        ("a,b,c\n1,x,y\n".encode("utf-16-le"), "looks like UTF-16 text without a byte-order mark"),
        (b"PK\x03\x04rest-of-a-zip", "a ZIP archive"),
    ],
)
def test_a_file_that_is_not_csv_text_says_what_it_looks_like(data, what):
    with pytest.raises(CsvFormatError, match=what):
        read(data)


def test_a_header_that_cannot_be_read_fails_the_file():
    with pytest.raises(CsvFormatError, match="line 1: the header cannot be read: not UTF-8 text"):
        read(b"a,b,\xff\n1,2,3\n")


def test_the_header_matches_names_loosely_ignores_extra_and_repeated_columns_but_not_a_repeated_one_it_reads():
    rows, _ = read(b" A ,note,B,note,C\n1,n1,x,n2,y\n")
    assert rows == [{"a": "1", "b": "x", "c": "y", "source_line": 2}]
    with pytest.raises(CsvFormatError, match="the header repeats column 'b' \\(positions 2, 3\\)"):
        read(b"a,b,b,c\n1,2,3,4\n")
    with pytest.raises(CsvFormatError, match="lacks required column\\(s\\) a"):
        read(b"b,c\n1,2\n")


def test_values_land_byte_for_byte_unless_a_rule_is_declared_for_the_column():
    schema = CsvSchema(
        "t.t",
        "t.q",
        (
            ColumnSpec("plain", "plain"),
            ColumnSpec("trimmed", "trimmed", trim=True),
            ColumnSpec("collapsed", "collapsed", collapse_whitespace=True, trim=True),
            ColumnSpec("lower", "lower", case="lower"),
            ColumnSpec("nulled", "nulled", missing_to_null=True),
        ),
        missing=("", "N/A"),
    )
    data = 'plain,trimmed,collapsed,lower,nulled\n" A\u00a0b\t",\u00a0 A b ," A \t\r\n\u00a0 b ",ÀB, N/A \n'.encode()
    rows, _ = read(data, schema)
    assert rows == [
        {"plain": " A\u00a0b\t", "trimmed": "A b", "collapsed": "A b", "lower": "àb", "nulled": None, "source_line": 2}
    ]


def test_types_are_checked_not_applied_and_every_problem_of_a_row_is_named_without_sensitive_values():
    data = HEADER + (
        b"\n 42 , 2026-11-20 , Ann@Example.COM ,Ann   Lee,Widget,N/A,eu, 3 , 2.50 ,\n"
        b",2026-02-30,x@y,Ann,W,,EU,three,-1,EUR\n"
        b"7,2024-02-29,,,W,,EU,+1,1e2,\n"
    )
    rows, rejected = read(data, SCHEMA)
    assert rows[0] == {
        "order_id": " 42 ",
        "order_date": " 2026-11-20 ",
        "customer_email": "ann@example.com",
        "customer_name": "Ann   Lee",
        "product": "Widget",
        "category": "N/A",
        "region": "eu",
        "quantity": " 3 ",
        "unit_price": " 2.50 ",
        "currency": "",
        "source_line": 2,
    }
    assert rows[1]["customer_email"] is None and rows[1]["unit_price"] == "1e2"
    assert rejected[0].reason == (
        "order_id: missing required value; order_date: '2026-02-30' is not a date "
        "(YYYY-MM-DD); quantity: 'three' is not an integer; unit_price: -1 is below the minimum 0"
    )
    assert "x@y" not in rejected[0].reason


def test_a_sensitive_value_that_breaks_its_type_is_named_but_not_shown():
    schema = CsvSchema("t.t", "t.q", (ColumnSpec("a", "a", type="integer", sensitive=True),))
    _, rejected = read(b"a\nsecret\n", schema)
    assert rejected[0].reason == "a: invalid value"


def test_silver_reads_the_same_missing_value_words_as_the_sales_schema_file():
    from pathlib import Path

    import yaml

    project = yaml.safe_load((Path(__file__).parents[1] / "dbt_project" / "dbt_project.yml").read_text())
    assert project["vars"]["sales_missing_values"] == list(SCHEMA.missing)
