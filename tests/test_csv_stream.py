"""RFC 4180 parsing from byte chunks, and validation against the sales schema file (no servers)."""

from datetime import date
from decimal import Decimal

import pytest

from dw_platform.defs.sales.ingest import SCHEMA
from dw_platform.lib.csv_stream import CsvFormatError, Record, RowError, clean_text, records

HEADER = "order_id,order_date,customer_email,customer_name,product,category,region,quantity,unit_price,currency"


def chunked(data: bytes, size: int = 3):
    """Tiny chunks, so records, quotes and multi-byte characters straddle chunk borders."""
    return (data[i:i + size] for i in range(0, len(data), size))


def parse(text: str | bytes, size: int = 3) -> list[Record]:
    return list(records(chunked(text.encode() if isinstance(text, str) else text, size)))


def test_quoted_delimiters_escaped_quotes_and_newlines_inside_quotes_are_one_field():
    rows = parse('a,b,c\r\n1,"x, y","he said ""hi"""\r\n2,"two\r\nlines",z\r\n')
    assert [r.fields for r in rows] == [["a", "b", "c"], ["1", "x, y", 'he said "hi"'], ["2", "two\r\nlines", "z"]]
    assert [r.line for r in rows] == [1, 2, 3]
    assert rows[2].raw == '2,"two\r\nlines",z\r\n'


def test_line_numbers_count_physical_lines_and_skip_blank_ones():
    rows = parse('h\n"a\nb"\n\nc\n')
    assert [(r.line, r.fields) for r in rows] == [(1, ["h"]), (2, ["a\nb"]), (5, ["c"])]


def test_a_utf8_bom_is_dropped_and_multibyte_characters_survive_chunk_borders():
    rows = parse("\ufeffname\nJosé Müller\n日本\n".encode(), size=1)
    assert [r.fields for r in rows] == [["name"], ["José Müller"], ["日本"]]


def test_a_file_without_a_final_newline_still_yields_its_last_record():
    assert [r.fields for r in parse("a,b\n1,2")] == [["a", "b"], ["1", "2"]]


def test_empty_files_and_a_lone_bom_yield_no_records():
    assert parse(b"") == [] and parse(b"\xef\xbb\xbf") == [] and parse("\r\n\n") == []


def test_a_stray_quote_is_a_bad_record_and_parsing_goes_on():
    rows = parse('a,b\n1,"x"y\n2,z\n')
    assert rows[1].fields is None and rows[1].line == 2 and "malformed CSV" in rows[1].error
    assert rows[2].fields == ["2", "z"] and rows[2].line == 3


def test_invalid_utf8_fails_the_file_with_its_line_number():
    with pytest.raises(CsvFormatError, match=r"line 3: not UTF-8 text \(byte b'\\xff'"):
        parse(b"a,b\n1,2\n3,\xff\n")


def test_an_unterminated_quote_fails_the_file():
    with pytest.raises(CsvFormatError, match="line 2: a quoted field is never closed"):
        parse('a,b\n1,"open\n2,3\n')


def test_binary_data_fails_the_file_rather_than_loading_garbage():
    with pytest.raises(CsvFormatError, match="not UTF-8 text"):
        parse(bytes(range(256)) * 10)


def header(text: str = HEADER) -> Record:
    return next(records([text.encode() + b"\n"]))


def test_the_header_must_hold_every_required_column_whatever_its_case_and_spacing():
    converter = SCHEMA.bind(header(" Order_ID , ORDER_DATE,product,region,quantity,unit_price"))
    assert converter.width == 6
    with pytest.raises(CsvFormatError, match="lacks required column\\(s\\) region, quantity"):
        SCHEMA.bind(header("order_id,order_date,product,unit_price"))
    with pytest.raises(CsvFormatError, match="repeats column\\(s\\) product"):
        SCHEMA.bind(header("order_id,order_date,product,product,region,quantity,unit_price"))


def test_values_are_trimmed_normalized_typed_and_missing_markers_become_null():
    converter = SCHEMA.bind(header())
    values = converter.convert(
        [" 42 ", "2026-11-20", " Ann@Example.COM ", "Ann   Lee", "Widget", "N/A", "eu", "3", "2.50", ""]
    )
    named = dict(zip([c.name for c in SCHEMA.columns], values))
    assert named == {
        "order_id": "42", "order_date": date(2026, 11, 20), "customer_email": "ann@example.com",
        "customer_name": "Ann Lee", "product": "Widget", "category": None, "region": "EU", "quantity": 3,
        "unit_price": Decimal("2.50"), "currency": "USD",
    }


def test_every_problem_of_a_row_is_named_and_sensitive_values_are_never_echoed():
    converter = SCHEMA.bind(header())
    with pytest.raises(RowError) as raised:
        converter.convert(["", "20-11-2026", "x@y", "Ann", "W", "", "EU", "three", "-1", "EUR"])
    reason = str(raised.value)
    assert "x@y" not in reason and "Ann" not in reason
    assert reason == ("order_id: missing required value; order_date: '20-11-2026' is not a date (YYYY-MM-DD); "
                      "quantity: 'three' is not an integer; unit_price: -1 is below the minimum 0")
    with pytest.raises(RowError, match="expected 10 fields, found 3"):
        converter.convert(["1", "2", "3"])
    with pytest.raises(RowError, match="NUL"):
        converter.convert(["1", "2026-11-20", "x@y", "A\x00n", "W", "", "EU", "1", "1", "EUR"])


def test_clean_text_collapses_whitespace_and_composes_unicode():
    assert clean_text("  Jose\u0301 \t  Lee ") == "José Lee"
