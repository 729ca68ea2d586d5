"""The access-log parser on lines as Apache and nginx really write them."""

import gzip

import pytest

from dw_platform.lib.access_log import FIELDS, BadLine, count_lines, parse
from dw_platform.lib.compression import CompressionError, decompressed
from dw_platform.lib.landing import gzip_chunks


def parsed(data: bytes, chunk: int = 1 << 20, **options) -> list:
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    return [row for batch in parse(chunks, **options) for row in batch]


def fields(row: tuple) -> dict:
    return dict(zip(("line_number", *FIELDS), row))


COMBINED = (
    b'203.0.113.7 - - [10/Oct/2026:13:55:36 -0700] "GET /apache_pb.gif?a=1 HTTP/1.1" 200 2326 '
    b'"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"\n'
)


def test_a_combined_log_format_line_keeps_every_field_as_written():
    assert fields(parsed(COMBINED)[0]) == {
        "line_number": 1,
        "client_ip": "203.0.113.7",
        "identity": "-",
        "remote_user": "-",
        "time_local": "10/Oct/2026:13:55:36 -0700",
        "request": "GET /apache_pb.gif?a=1 HTTP/1.1",
        "method": "GET",
        "path": "/apache_pb.gif?a=1",
        "protocol": "HTTP/1.1",
        "status": "200",
        "bytes_sent": "2326",
        "referrer": "http://www.example.com/start.html",
        "user_agent": "Mozilla/4.08 [en] (Win98; I ;Nav)",
    }


def test_a_common_log_format_line_has_no_referrer_or_user_agent():
    row = fields(
        parsed(b'127.0.0.1 user-identifier frank [10/Oct/2000:13:55:36 +0000] "GET /a.gif HTTP/1.0" 200 2326\n')[0]
    )
    assert (row["identity"], row["remote_user"], row["referrer"], row["user_agent"]) == (
        "user-identifier",
        "frank",
        None,
        None,
    )


@pytest.mark.parametrize(
    "ip", ["2001:db8::1", "::1", "2001:db8:85a3::8a2e:370:7334", "::ffff:192.0.2.128", "fe80::1%eth0"]
)
def test_ipv6_clients_parse(ip):
    line = f'{ip} - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/2.0" 200 5 "-" "curl/8.4.0"\n'.encode()
    assert fields(parsed(line)[0])["client_ip"] == ip


@pytest.mark.parametrize("offset", ["+0000", "-0700", "+0530", "+0930", "-1200", "+1400"])
def test_any_time_zone_offset_parses(offset):
    line = f'192.0.2.1 - - [29/Feb/2028:23:59:59 {offset}] "GET / HTTP/1.1" 200 1\n'.encode()
    assert fields(parsed(line)[0])["time_local"] == f"29/Feb/2028:23:59:59 {offset}"


def test_dashes_for_missing_size_user_and_referrer_are_kept():
    row = fields(parsed(b'192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "HEAD / HTTP/1.1" 304 - "-" "-"\n')[0])
    assert (row["bytes_sent"], row["remote_user"], row["referrer"], row["user_agent"]) == ("-", "-", "-", "-")


@pytest.mark.parametrize(
    "request_line, split",
    [
        ("-", (None, None, None)),  # connection closed before a request (408)
        ("\\x16\\x03\\x01\\x00\\xa5\\x01\\x00", (None, None, None)),  # a TLS handshake on the HTTP port, escaped
        ("GET /../../etc/passwd", ("GET", "/../../etc/passwd", None)),  # HTTP/0.9, no protocol
        ("GET /a b HTTP/1.1", ("GET", "/a b", "HTTP/1.1")),  # an unescaped space in the target
        ('GET /q?\\"x\\" HTTP/1.1', ("GET", '/q?\\"x\\"', "HTTP/1.1")),
        ("PRI * HTTP/2.0", ("PRI", "*", "HTTP/2.0")),
    ],
)
def test_request_lines_that_are_not_plain_http_still_load(request_line, split):
    line = f'198.51.100.9 - - [23/Nov/2026:10:15:33 +0000] "{request_line}" 400 226 "-" "-"\n'.encode()
    row = fields(parsed(line)[0])
    assert row["request"] == request_line
    assert (row["method"], row["path"], row["protocol"]) == split


def test_escaped_quotes_inside_the_user_agent_and_referrer_are_kept_as_written():
    line = (
        b'192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "http://x/?q=\\"a\\"" '
        b'"Mozilla/5.0 \\"Edge\\" 120 \\\\ back"\n'
    )
    row = fields(parsed(line)[0])
    assert row["referrer"] == 'http://x/?q=\\"a\\"'
    assert row["user_agent"] == 'Mozilla/5.0 \\"Edge\\" 120 \\\\ back'


def test_crlf_line_ends_a_missing_final_newline_and_lines_split_across_chunks_parse():
    data = COMBINED.replace(b"\n", b"\r\n") * 3 + COMBINED.rstrip(b"\n")
    for chunk in (1, 7, 64, 1 << 20):
        rows = parsed(data, chunk)
        assert [r[0] for r in rows] == [1, 2, 3, 4]
        assert all(not isinstance(r, BadLine) and r[-1] == "Mozilla/4.08 [en] (Win98; I ;Nav)" for r in rows)
    assert count_lines([data]) == 4


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"this is not a log line", "not an access log line: no [timestamp]"),
        (
            b'192.0.2.5 - - [23/Nov/2026:10:16:00 +0000] "GET / HTTP/1.1" 200',
            "no three-digit status followed by a size",
        ),
        (
            b'192.0.2.6 - - [31/Foo/2026:10:16:00 +0000] "GET / HTTP/1.1" 200 12',
            "timestamp '31/Foo/2026:10:16:00 +0000' is not a date and time",
        ),
        (
            b'192.0.2.6 - - [31/Nov/2026:10:16:00 +0000] "GET / HTTP/1.1" 200 12',
            "timestamp '31/Nov/2026:10:16:00 +0000' is not a date and time",
        ),
        (
            b'192.0.2.6 - - [30/Nov/2026:25:16:00 +0000] "GET / HTTP/1.1" 200 12',
            "timestamp '30/Nov/2026:25:16:00 +0000' is not a date and time",
        ),
        (
            b'192.0.2.6 - - [30/Nov/2026:10:16:00 +00:00] "GET / HTTP/1.1" 200 12',
            "the timestamp is not [dd/Mon/yyyy:HH:MM:SS +zzzz] after client, identity and user",
        ),
        (b'192.0.2.7 - - [23/Nov/2026:10:16:00 +0000] "GET / HTTP/1.1 200 12', "the request is not a quoted string"),
        (
            b'192.0.2.7 - - [23/Nov/2026:10:16:00 +0000] "GET / HTTP/1.1" 200 12 "-" "ua" extra',
            "unexpected text after the size (neither Common nor Combined Log Format)",
        ),
        (b"", "empty line"),
        (b'192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET /\xff HTTP/1.1" 200 1', "not UTF-8 (byte 0xff at byte 50)"),
        (
            b'192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET /\x00 HTTP/1.1" 200 1',
            "NUL byte (at byte 50; servers write control characters escaped, as \\xHH)",
        ),
        (
            b'192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET /\xc3\xa9\x1b[31m HTTP/1.1" 200 1',
            "control character 0x1b (at byte 52; servers write control characters escaped, as \\xHH)",
        ),
        (
            b"192.0.2.1 - - bare\rcarriage return",
            "control character 0x0d (at byte 19; servers write control characters escaped, as \\xHH)",
        ),
    ],
)
@pytest.mark.parametrize("chunk", [1 << 20, 5])
def test_lines_that_do_not_parse_come_back_with_their_number_exact_bytes_and_reason(line, reason, chunk):
    data = COMBINED + line + b"\n" + COMBINED
    rows = parsed(data, chunk)
    assert len(rows) == 3 and not isinstance(rows[0], BadLine) and not isinstance(rows[2], BadLine)
    assert rows[1] == BadLine(2, line, reason)
    assert rows[2][0] == 3


def test_a_line_holding_invalid_utf8_and_a_nul_is_quarantined_and_every_other_line_loads():
    hostile = b'192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET /\xff\xfe\x00 HTTP/1.1" 200 1 "-" "x"'
    data = COMBINED * 5000 + hostile + b"\n" + COMBINED * 4999
    rows = parsed(data, 64 << 10)
    bad = [r for r in rows if isinstance(r, BadLine)]
    assert len(rows) == 10_000 and bad == [BadLine(5001, hostile, "not UTF-8 (byte 0xff at byte 50)")]


@pytest.mark.parametrize("chunk", [1 << 20, 1000, 7])
def test_a_line_longer_than_the_limit_is_quarantined_cut_to_the_limit_with_flat_memory(chunk):
    long = b"192.0.2.1 - - [" + b"x" * 5000
    data = COMBINED + long + b"\n" + COMBINED + long + b"\r\n" + COMBINED + long  # the last without a line end
    rows = parsed(data, chunk, max_line_bytes=1000)
    reason = "the line is longer than max_line_bytes (1,000): 5,015 bytes, kept cut to its first 1,000 bytes"
    assert rows[1::2] == [BadLine(n, long[:1000], reason) for n in (2, 4, 6)]
    assert [r[0] for r in rows[0::2]] == [1, 3, 5] and count_lines([data]) == 6


def test_an_empty_file_has_no_lines():
    assert parsed(b"") == [] and count_lines([b""]) == 0 and count_lines([]) == 0


def test_gzip_chunks_round_trip_and_are_a_real_gzip_file():
    data = COMBINED * 5000
    packed = b"".join(gzip_chunks([data[i : i + 1000] for i in range(0, len(data), 1000)]))
    assert gzip.decompress(packed) == data
    assert b"".join(decompressed([packed[i : i + 77] for i in range(0, len(packed), 77)])) == data
    with pytest.raises(CompressionError, match="cut short"):
        b"".join(decompressed([packed[:-20]]))


def test_backslashes_and_odd_separators_in_fields_survive_the_copy_text_format_and_raw_tabs_are_quarantined():
    line = '192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET /a\\\\b HTTP/1.1" 200 1 "-" "UA\\twith tab \u2028 end"\n'
    row = fields(parsed(line.encode())[0])
    assert row["path"] == "/a\\\\b" and row["user_agent"] == "UA\\twith tab \u2028 end"
    raw_tab = line.replace("\\t", "\t").encode()
    assert parsed(raw_tab)[0].reason.startswith("control character 0x09 (at byte")
