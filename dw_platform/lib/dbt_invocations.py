"""What a dbt invocation of a run leaves behind: its process never outlives the run, and its
target folder is kept only among the latest.

dbt runs as a child process of the run's step (dagster-dbt). Killed with its run, a dbt process
would keep writing to the warehouse: the run worker killed with -9 (its dbt is reparented and
goes on), or interrupted by Dagster's terminate (dagster-dbt forwards SIGINT, waits 25 s, then
gives up on it; or the interrupt lands outside the step's code, which is then never resumed).
So dbt is started through `dw-dbt`, which asks the kernel to kill it with SIGKILL the moment the
process that started it dies (PR_SET_PDEATHSIG) and then becomes dbt (exec); and the dbt resource
stops (`stop`) a dbt still running when the run's resources are torn down, which Dagster does
before it marks the run canceled or failed (`dw_platform.lib.dbt.DbtCli`).

dagster-dbt gives every invocation a target folder of its own (`target/<op>-<run id>-<random>`:
artifacts, compiled SQL, dbt.log; 3-4 MB a run). `prune_invocation_folders` keeps the newest and
those of invocations still running.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import TypeVar

# The pid of the process starting dbt, so `dw-dbt` can tell it died before the kernel watched it.
PARENT_PID_VARIABLE = "DW_DBT_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
T = TypeVar("T")


def main() -> None:
    """`dw-dbt ARGS...`: `dbt ARGS...` (the dbt beside this interpreter), killed with its parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except AttributeError:  # not Linux: no such guarantee, dbt runs as plain dbt
        pass
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if expected and os.getppid() != int(expected):  # the parent died before the kernel watched it
        sys.exit(f"dw-dbt: the process that started dbt ({expected}) is gone")
    dbt = str(Path(sys.executable).with_name("dbt"))
    os.execv(dbt, [dbt, *sys.argv[1:]])


def parent_env() -> dict[str, str]:
    """The environment a dbt invocation started from this process needs for `dw-dbt`."""
    return {PARENT_PID_VARIABLE: str(os.getpid())}


def read_in_background(events: Iterator[T], poll_s: float = 0.5) -> Iterator[T]:
    """`events` (a dbt invocation's stream), read on a thread of their own while this thread waits
    for them `poll_s` at a time. Dagster's terminate interrupts the step's thread only when it runs
    Python code: blocked reading dbt's output while dbt prints nothing (a statement waiting on a
    lock), the step would never see it. Interrupted here, the step ends and the run's resources
    stop dbt (`dw_platform.lib.dbt.DbtCli`); the reading thread ends with dbt's output."""
    queue: Queue = Queue()
    end = object()

    def read() -> None:
        try:
            for event in events:
                queue.put((event, None))
        except BaseException as exc:  # handed to the step's thread, which raises it
            queue.put((end, exc))
        else:
            queue.put((end, None))

    threading.Thread(target=read, name="dbt-events", daemon=True).start()
    while True:
        try:
            event, error = queue.get(timeout=poll_s)
        except Empty:
            continue
        if error is not None:
            raise error
        if event is end:
            return
        yield event


def interrupt_again_after_the_step(delay_s: float = 1.0) -> None:
    """Send this run's process the interrupt it just received once more, `delay_s` from now.

    Dagster turns an interrupt that reaches a step's own code (its terminate, while dbt runs)
    into a retry of the step when the job has a retry policy, as every domain job has: the run
    would build again instead of stopping. The second interrupt arrives after the step has ended,
    where Dagster takes it as the run's termination."""
    timer = threading.Timer(delay_s, os.kill, (os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()


def stop(process: subprocess.Popen, grace_s: float = 10) -> None:
    """Stop a dbt still running: SIGINT (dbt cancels its queries on the server), SIGKILL after `grace_s`."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# dagster-dbt names an invocation's target folder <op name>-<first 7 of the run id>-<7 random hex>.
_INVOCATION_FOLDER = re.compile(r".+-[0-9a-f]{7}-[0-9a-f]{7}")
KEPT_INVOCATIONS = 20
UNFINISHED_KEPT_S = 3600


def prune_invocation_folders(
    target: Path, keep: int = KEPT_INVOCATIONS, unfinished_kept_s: float = UNFINISHED_KEPT_S
) -> int:
    """Remove the folders of invocations beyond the newest `keep`: those that finished (dbt wrote
    run_results.json), and those that did not (killed) once untouched for `unfinished_kept_s`,
    so a long invocation of a concurrent run keeps its folder. Returns how many were removed."""
    if not target.is_dir():
        return 0
    folders = [f for f in target.iterdir() if f.is_dir() and _INVOCATION_FOLDER.fullmatch(f.name)]
    folders.sort(key=_last_written, reverse=True)
    removed = 0
    for folder in folders[keep:]:
        if (folder / "run_results.json").exists() or time.time() - _last_written(folder) > unfinished_kept_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _last_written(folder: Path) -> float:
    """When dbt last wrote to the folder: a new file there, or a line of its log."""
    try:
        log = (folder / "dbt.log").stat().st_mtime
    except OSError:
        log = 0.0
    try:
        return max(folder.stat().st_mtime, log)
    except OSError:  # removed meanwhile by another run's pruning
        return 0.0
