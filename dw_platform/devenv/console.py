"""`dw dev`'s console: everything `dagster dev` and its runs print goes to a log file, and only
warnings and errors reach the terminal.

`dagster dev --log-level warning` quiets the webserver and the daemon, but each run's process
prints its whole event log (DEBUG and up) and every line dbt writes to the same terminal (Dagster
mirrors a step's output there as well as into the step's log the UI shows). Here a log record is
shown when its level is WARNING or above, with the traceback lines that follow it, and so is what
the supervisor says (its lines start with "dw dev:", devenv/supervisor.py); the rest (run events,
dbt's progress lines, Python's deprecation notices) stays in the log file and the UI.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterable
from typing import BinaryIO, TextIO

# Dagster's log line ("2026-11-23 10:15:32 +0000 - dagster.daemon.SensorDaemon - WARNING - ...")
# and uvicorn's ("ERROR:    [Errno 98] ...").
_RECORD = re.compile(
    r"^(?:\d{4}-\d\d-\d\d[ T][\d:.,]+(?: [+-]\d{4})? - \S+ - (?P<level>[A-Z]+) - "
    r"|(?P<uvicorn>DEBUG|INFO|WARNING|ERROR|CRITICAL):\s"
    r"|(?P<supervisor>dw dev: ))"
)
_SHOWN = {"WARNING", "ERROR", "CRITICAL", "FATAL"}
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# What continues a shown record: its traceback (indented frames, the exception's own line).
_CONTINUATION = re.compile(
    r"^(?:\s|$|Traceback |Stack Trace:|The above exception|During handling|[\w.]+(?:Error|Exception|Failure|Exit|Interrupt)\b)"
)


class ConsoleFilter:
    """Decides line by line what the terminal shows (a record's continuation lines follow it)."""

    def __init__(self) -> None:
        self.showing = False

    def shows(self, line: str) -> bool:
        line = _COLOUR.sub("", line)
        record = _RECORD.match(line)
        if record:
            self.showing = bool(record["supervisor"]) or (record["level"] or record["uvicorn"]) in _SHOWN
        else:
            self.showing = self.showing and bool(_CONTINUATION.match(line))
        return self.showing


def split_output(lines: Iterable[bytes], log: BinaryIO, console: TextIO) -> None:
    """Every line to `log`; the warnings and errors among them to `console`."""
    keep = ConsoleFilter()
    for raw in lines:
        log.write(raw)
        log.flush()
        line = raw.decode("utf-8", "replace")
        if keep.shows(line):
            console.write(line)
            console.flush()


def start_splitting(stream: BinaryIO, log: BinaryIO, console: TextIO) -> threading.Thread:
    thread = threading.Thread(target=split_output, args=(iter(stream.readline, b""), log, console), daemon=True)
    thread.start()
    return thread


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on (or holds) `port`, so a webserver could not bind it. The probe
    reuses the address as uvicorn does, so a connection just closed does not count."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False
