"""A streaming parser for web server access logs in Common and Combined Log Format (Apache, nginx).

    %h %l %u %t "%r" %>s %b                          Common Log Format
    %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"   Combined Log Format

As servers really write them: IPv4 or IPv6 clients (or host names), `-` for a missing identity,
user, size or referrer, any time-zone offset, request lines that are not HTTP (`"-"` for a
connection closed before a request, TLS handshakes and scanner garbage escaped as `\\xHH`, HTTP/0.9
requests without a protocol), and quotes inside quoted fields escaped as `\\"`. Fields are kept as
written (escapes included); the request line is also split into method, path and protocol when it
is one. Lines are LF or CRLF terminated; the file is read in chunks, never whole.

A line that does not fit is returned as a `BadLine` with its number, its exact bytes and the
reason, never dropped, and the lines after it parse as usual: truncated or garbage lines, a bad
timestamp, bytes that are not UTF-8, a NUL or any other control character (servers write those
escaped, as `\\xHH`: a raw one means the line was damaged), a line longer than `max_line_bytes`
(kept cut to that length; memory never holds more of it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np

MAX_LINE_BYTES = 64 << 10  # Apache's request line and each header are limited to 8 KiB

_QUOTED = r'"([^"\\\n]*(?:\\.[^"\\\n]*)*)"'
# The request line as one quoted field; when it is `METHOD target HTTP/x` the parts are captured too.
_REQUEST = r'"((\w+) ([^ "\\\n]*(?:\\.[^ "\\\n]*)*) (HTTP/[0-9.]+)|[^"\\\n]*(?:\\.[^"\\\n]*)*)"'
_LINE_PATTERN = (
    r"([^ \n]+) ([^ \n]+) (.*?) \[(\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "
    + _REQUEST
    + r" (\d{3}) (\d+|-)(?: "
    + _QUOTED
    + " "
    + _QUOTED
    + r")?"
)
_LINE = re.compile(_LINE_PATTERN)
# The same, for every line of a block of text at once (one match per good line).
_LINES = re.compile(r"^" + _LINE_PATTERN + r"\r?$", re.MULTILINE)
FIELDS = (
    "client_ip",
    "identity",
    "remote_user",
    "time_local",
    "request",
    "method",
    "path",
    "protocol",
    "status",
    "bytes_sent",
    "referrer",
    "user_agent",
)


@dataclass(frozen=True)
class BadLine:
    """A line that does not load: its bytes as in the file (without the line end; an over-long
    line cut to `max_line_bytes`) and why."""

    line_number: int
    raw: bytes
    reason: str


class _Timestamps:
    """Validates `%t` values already shaped `dd/Mon/yyyy:HH:MM:SS +zzzz` by the line pattern: the
    day (month name, days in the month) is checked once per distinct day, the clock and the
    offset by comparing digits; fast enough for a million lines a second."""

    def __init__(self) -> None:
        self._days: set[str] = set()

    def valid(self, value: str) -> bool:
        day = value[:11]
        if day not in self._days:
            try:
                datetime.strptime(day, "%d/%b/%Y")
            except ValueError:
                return False
            if len(self._days) > 10_000:  # bounded: memory does not grow with the file
                self._days.clear()
            self._days.add(day)
        return (
            value[12:14] <= "23"
            and value[15:17] <= "59"
            and value[18:20] <= "60"
            and value[22:24] <= "14"
            and value[24:26] <= "59"
        )


def split_request(request: str) -> tuple[str | None, str | None, str | None]:
    """(method, path, protocol) of an HTTP request line; (method, path, None) for HTTP/0.9;
    all None for anything else (`-`, TLS bytes, scanner garbage)."""
    parts = request.split(" ")
    if len(parts) >= 3 and parts[-1].startswith("HTTP/"):
        return parts[0], " ".join(parts[1:-1]), parts[-1]
    if len(parts) == 2 and parts[0].isalpha() and parts[0].isupper() and parts[1].startswith("/"):
        return parts[0], parts[1], None
    return None, None, None


def parse_line(text: str, timestamps: _Timestamps | None = None) -> tuple | str:
    """The fields of one line (as in FIELDS), or the reason it does not parse."""
    match = _LINE.fullmatch(text)
    if match is None:
        return _why_not(text)
    return _fields(match.groups(), timestamps or _Timestamps())


def _fields(groups: tuple, timestamps: _Timestamps) -> tuple | str:
    ip, identity, user, ts, request, method, path, protocol, status, size, referrer, agent = groups
    if not timestamps.valid(ts):
        return f"timestamp {ts!r} is not a date and time"
    if method is None:
        method, path, protocol = split_request(request)
    return ip, identity, user, ts, request, method, path, protocol, status, size, referrer, agent


def _why_not(text: str) -> str:
    if not text.strip():
        return "empty line"
    if "[" not in text:
        return "not an access log line: no [timestamp]"
    if not re.match(r"[^ ]+ [^ ]+ .*? \[\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] ", text):
        return "the timestamp is not [dd/Mon/yyyy:HH:MM:SS +zzzz] after client, identity and user"
    if not re.search(r'\] "[^"\\]*(?:\\.[^"\\]*)*" ', text):
        return "the request is not a quoted string"
    if not re.search(r'" \d{3} (?:\d+|-)', text):
        return "no three-digit status followed by a size"
    return "unexpected text after the size (neither Common nor Combined Log Format)"


@dataclass(frozen=True)
class _LongLine:
    """A line longer than the limit, read past without keeping more than its first bytes."""

    head: bytes
    size: int


def _blocks(chunks: Iterable[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[bytes | _LongLine]:
    """The stream cut into blocks of whole lines (without the block's last LF); a line that grows
    past `limit` bytes before its end is seen comes alone, as a `_LongLine`."""
    rest = b""
    long: _LongLine | None = None
    last = b""  # the previous chunk's last byte
    for chunk in chunks:
        cut = chunk.rfind(b"\n")
        if long is not None:
            first = chunk.find(b"\n")
            if first < 0:
                long, last = _LongLine(long.head, long.size + len(chunk)), chunk[-1:]
                continue
            size = long.size + first - ((chunk[first - 1 : first] if first else last) == b"\r")
            yield _LongLine(long.head, size) if size > limit else long.head[:size]
            long, chunk = None, chunk[first + 1 :]
            cut -= first + 1
        last = chunk[-1:]
        if cut < 0:
            rest += chunk
            if len(rest) > limit:
                long, rest = _LongLine(rest[:limit], len(rest)), b""
            continue
        yield rest + chunk[:cut]
        rest = chunk[cut + 1 :]
    if long is not None:
        yield long
    elif rest:
        yield rest


def count_lines(chunks: Iterable[bytes]) -> int:
    """The number of lines `parse` sees in the same bytes (a recount without parsing)."""
    count, last = 0, b"\n"
    for chunk in chunks:
        if chunk:
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


@dataclass
class ParsedBatch:
    """Up to `batch_rows` lines of a file: the good ones as PostgreSQL COPY text (`line_number`
    and FIELDS, tab-separated, escaped, `\\N` for none, one line each ending in a newline), the
    bad ones as BadLines."""

    copy_text: str
    rows: int
    bad: list[BadLine]


def parse_copy_text(
    chunks: Iterable[bytes], batch_rows: int = 10_000, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[ParsedBatch]:
    """Parse a log straight into COPY text batches, in file order.

    A block of whole lines is decoded and matched at once (one regex match per good line), and a
    good line becomes its COPY text line with one `join`: Python does little per line. Lines
    between two matches are the bad ones. A block holding a control character other than the
    line ends, bytes that are not UTF-8 or an over-long line (rare) is parsed line by line, to
    name the bad ones.
    """
    timestamps = _Timestamps()
    valid = timestamps.valid
    number = 0
    out: list[str] = []
    bad: list[BadLine] = []
    for block in _blocks(chunks, max_line_bytes):
        text = None
        if isinstance(block, _LongLine):
            number += 1
            bad.append(BadLine(number, block.head, _too_long(block.size, max_line_bytes)))
        elif _plain(block, max_line_bytes):
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError:
                pass
        if text is None and not isinstance(block, _LongLine):
            for raw in block.split(b"\n"):
                number += 1
                parsed = _one_line(number, raw[:-1] if raw.endswith(b"\r") else raw, timestamps, max_line_bytes)
                if isinstance(parsed, BadLine):
                    bad.append(parsed)
                else:
                    out.append(_copy_line(parsed))
        elif text is not None:
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            pos = 0
            for m in _LINES.finditer(text):
                if m.start() != pos:
                    number = _bad_lines(text[pos : m.start() - 1], number, bad)
                number += 1
                pos = m.end() + 1
                groups = m.groups()
                if groups[5] is not None and groups[10] is not None and valid(groups[3]):
                    joined = "\t".join(groups)
                    if "\\" not in joined:  # the common case: nothing to escape, no field missing
                        out.append(f"{number}\t{joined}\n")
                        continue
                fields = _fields(groups, timestamps)
                if isinstance(fields, str):
                    bad.append(BadLine(number, m.group().encode(), fields))
                else:
                    out.append(_copy_line((number, *fields)))
            if pos <= len(text):
                number = _bad_lines(text[pos:], number, bad)
        if len(out) + len(bad) >= batch_rows:
            yield ParsedBatch("".join(out), len(out), bad)
            out, bad = [], []
    if out or bad:
        yield ParsedBatch("".join(out), len(out), bad)


def _plain(block: bytes, limit: int) -> bool:
    """Whether a block can take the fast path: no control character but the line ends (LF, CRLF,
    a CR ending the block) and no line longer than `limit` bytes. numpy over the bytes."""
    arr = np.frombuffer(block, np.uint8)
    marks = np.flatnonzero((arr < 32) | (arr == 127))
    kinds = arr[marks]
    lf = marks[kinds == 10]
    if len(lf) != len(marks):
        cr = marks[kinds == 13]
        if len(cr) + len(lf) != len(marks):
            return False
        after = np.minimum(cr + 1, len(arr) - 1)
        if not ((arr[after] == 10) | (cr + 1 == len(arr))).all():
            return False
    if len(arr) <= limit:
        return True
    longest = int(np.diff(lf, prepend=-1, append=len(arr)).max()) - 1
    return longest <= limit


def _too_long(size: int, limit: int) -> str:
    return f"the line is longer than max_line_bytes ({limit:,}): {size:,} bytes, kept cut to its first {limit:,} bytes"


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\t" in text or "\r" in text or "\n" in text:
        text = text.replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")
    return text


def _copy_line(row: tuple) -> str:
    return "\t".join([_copy_value(v) for v in row]) + "\n"


def _from_copy_line(line: str) -> tuple:
    unescape = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}
    values = [None if v == "\\N" else re.sub(r"\\[\\tnr]", lambda e: unescape[e.group()], v) for v in line.split("\t")]
    return (int(values[0]), *values[1:])


def parse(
    chunks: Iterable[bytes], batch_rows: int = 10_000, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[list[tuple | BadLine]]:
    """Batches of parsed lines: `(line_number, *fields)` tuples and `BadLine`s, in file order
    (the COPY text of `parse_copy_text` read back: one parsing code path)."""
    for batch in parse_copy_text(chunks, batch_rows, max_line_bytes):
        rows = [_from_copy_line(line) for line in batch.copy_text.split("\n")[:-1]] + batch.bad
        yield sorted(rows, key=lambda r: r.line_number if isinstance(r, BadLine) else r[0])


def _bad_lines(text: str, number: int, batch: list) -> int:
    """The lines of `text` (between two good lines) as BadLines; returns the last line number."""
    for line in text.split("\n"):
        number += 1
        line = line[:-1] if line.endswith("\r") else line
        batch.append(BadLine(number, line.encode(), _why_not(line)))
    return number


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(number: int, raw: bytes, timestamps: _Timestamps, limit: int = MAX_LINE_BYTES) -> tuple | BadLine:
    if len(raw) > limit:
        return BadLine(number, raw[:limit], _too_long(len(raw), limit))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadLine(number, raw, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})")
    control = _CONTROL.search(text)
    if control is not None:
        at = len(text[: control.start()].encode()) + 1
        what = "NUL byte" if control.group() == "\x00" else f"control character 0x{ord(control.group()):02x}"
        return BadLine(number, raw, f"{what} (at byte {at}; servers write control characters escaped, as \\xHH)")
    fields = parse_line(text, timestamps)
    return (number, *fields) if isinstance(fields, tuple) else BadLine(number, raw, fields)
