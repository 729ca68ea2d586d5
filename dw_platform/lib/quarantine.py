"""What a quarantine row keeps of a record that did not load: its exact bytes (a `bytea` column)
and a rendering of them for people (a `text` column, which PostgreSQL cannot give a NUL byte).

The rendering is UTF-8 where the bytes are UTF-8, U+FFFD for each byte that is not, and the
control characters other than tab and line feed as their Unicode control pictures (NUL as ␀,
ESC as ␛, a lone carriage return as ␍): readable, and it shows where the damage is. It is for
reading only; the bytes are the record.
"""

_PICTURES = {c: 0x2400 + c for c in range(32) if c not in (9, 10)} | {0x7F: 0x2421}


def readable(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").translate(_PICTURES)
