"""What every benchmark shares: each method runs in a fresh worker process (so its peak RSS is its
own), which prints its result as a `RESULT {json}` line for the parent to collect."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from dw_platform.devenv.embedded import PROJECT_ROOT


def run_worker(module: str, method: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run `python -m <module> --worker <method> <args>` and return the result it printed."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--worker", method, *args],
        env={**os.environ, **(env or {})},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"{method} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def emit(result: dict) -> None:
    """A worker's last line: its result for `run_worker`."""
    print("RESULT " + json.dumps(result), flush=True)


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux carries `ru_maxrss` over from the parent across fork + exec
    (a trivial child of a 300 MiB parent reports 300 MiB), so read VmHWM, which starts at exec."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by process `pid`, its live descendants and those that ended."""
    import psutil

    process = psutil.Process(pid)
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # ended meanwhile: counted in its parent's children times
        total += times.user + times.system
    return total


def postgres_cpu(home: Path) -> float:
    """CPU seconds used so far by the embedded PostgreSQL under `home` (every backend)."""
    return process_tree_cpu(int((home / "pg" / "postmaster.pid").read_text().split()[0]))
