"""`dw workers N`: N Celery workers for the code location, each a process of its own that runs one
step at a time (Celery's prefork pool with one child: the worker survives its step process and
reports it lost). A worker needs only the code location and the settings (the environment or .env:
DW_REDIS_URL, the warehouse, the sources, DAGSTER_PG_URL), so the same command runs on another
machine given the same image and settings. Ctrl-C stops them after their current steps."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from dw_platform.devenv.embedded import PROJECT_ROOT, stop_process
from dw_platform.lib.executor import DEFAULT_QUEUE

# Every queue a job sends steps to: the default one and the replication domain's own.
QUEUES = (DEFAULT_QUEUE, "replication")


def worker_command(name: str, queues: tuple[str, ...] = QUEUES) -> list[str]:
    """One Celery worker named `name@<host>` on `queues`, one step at a time."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "dw_platform.lib.celery_worker",
        "worker",
        "--queues",
        ",".join(queues),
        "--hostname",
        f"{name}@%h",
        "--concurrency",
        "1",
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        "INFO",
        # no worker-to-worker chatter over the broker (workers need none of it)
        "--without-gossip",
        "--without-mingle",
    ]


def start_worker(name: str, queues: tuple[str, ...] = QUEUES, log=None) -> subprocess.Popen:
    """One worker in its own process group (its step process stops with it)."""
    return subprocess.Popen(
        worker_command(name, queues),
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        start_new_session=True,
    )


def stop_workers(workers: list[subprocess.Popen], grace_s: float = 60) -> None:
    """SIGTERM (Celery's warm shutdown: the current step finishes), SIGKILL after `grace_s`."""
    for worker in workers:
        stop_process(worker, grace_s=grace_s, group=True)


# A worker that exits sooner than this after its start is broken (settings, code), not killed:
# it is not started again.
MIN_UPTIME_S = 15.0


def run_workers(count: int, queues: tuple[str, ...] = QUEUES, log=None) -> int:
    """Run `count` workers until Ctrl-C or SIGTERM; a worker that dies (killed, out of memory) is
    started again, as a Kubernetes Deployment would. Its step is not lost: see lib/executor.py."""
    names = [f"dw{i}-{os.getpid()}" for i in range(1, count + 1)]
    workers = {name: (start_worker(name, queues, log), time.monotonic()) for name in names}
    print(f"dw workers: {count} Celery worker(s) on queue(s) {', '.join(queues)} (Ctrl-C stops)", file=sys.stderr)
    try:
        while True:
            for name, (worker, started) in list(workers.items()):
                if worker.poll() is None:
                    continue
                print(f"dw workers: {name} (pid {worker.pid}) exited with code {worker.returncode}", file=sys.stderr)
                if time.monotonic() - started < MIN_UPTIME_S:
                    return worker.returncode or 1
                stop_process(worker, group=True)  # what is left of its process group
                workers[name] = (start_worker(name, queues, log), time.monotonic())
            time.sleep(0.5)
    except (KeyboardInterrupt, SystemExit):
        print("dw workers: stopping after the current steps ...", file=sys.stderr)
        return 0
    finally:
        stop_workers([worker for worker, _ in workers.values()])
