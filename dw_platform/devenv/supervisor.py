"""`dw dev`: the Dagster webserver and daemon (`dagster dev`), a code server, and a supervisor that
brings back what dies, as Kubernetes does for the deployed platform.

`dagster dev` starts its own code server (`dagster code-server start`, which runs the code in a
`dagster api grpc` child) but restarts it only when that outer process exits: a killed `dagster
api grpc` leaves the location down until someone clicks Reload. And the code server's thread
that fails the runs whose process died stops for good at its first database error (an instance
outage), after which such runs stay STARTED for hours, holding queue slots.

So `dw dev` runs the code server itself on a unix socket in DAGSTER_HOME (the webserver and the
daemon load it as a `grpc_server` workspace entry), and a thread, every second:
- starts the code server again when it or its `dagster api grpc` child is gone, after killing
  what the dead server had started (its run workers, their dbt): the webserver and the daemon see
  the new server id and reload the location themselves; the UI's Reload keeps working;
- starts the embedded PostgreSQL again when its postmaster is gone (same socket, same port);
- fails the runs launched through this code server whose run worker process has been
  gone for a few seconds (a worker killed, or killed with its code server), as Dagster's run
  monitoring does for run pods on Kubernetes; run retries then run them again. A database error
  skips one check; the next one tries again.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import dagster as dg
import psutil

from dw_platform.devenv import embedded
from dw_platform.lib.paths import PROJECT_ROOT

LOCATION_NAME = "dw_platform"
CODE_MODULE = "dw_platform.definitions"
# The tag where Dagster's default run launcher records the code server a run was launched on.
GRPC_INFO_TAG = ".dagster/grpc_info"
# The engine event a run worker writes as it starts.
_WORKER_STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")
# A run's worker found gone this long is failed (Dagster's own check in the code server, when it
# still works, acts within a second; this one must not race it).
WORKER_GONE_GRACE_S = 5.0
# Runs are failed only once the code server has served this long: the daemon creates their
# retries on its view of the location, which it reloads a few seconds after a restart (a retry it
# cannot create then is never tried again).
CODE_SERVER_SETTLE_S = 15.0
POLL_S = 1.0
# A run whose worker has started (STARTING until the worker has loaded the job, then STARTED).
_RUNNING = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)


def code_server_socket(dagster_home: Path) -> Path:
    """Where the code server listens: in DAGSTER_HOME (the owner's only), the same path for every
    `dw dev` on this state folder, so a later one also fails the runs an earlier one left behind."""
    path = dagster_home / "code_server.sock"
    if len(str(path)) > 100:  # a unix socket path is at most 107 bytes
        path = Path(tempfile.mkdtemp(prefix="dw-")) / "code_server.sock"
    return path


def workspace_file(dagster_home: Path, socket_path: Path) -> Path:
    """The workspace the webserver and the daemon load: the code server on its socket."""
    path = dagster_home / "workspace.yaml"
    entry = {"grpc_server": {"socket": str(socket_path), "location_name": LOCATION_NAME}}
    path.write_text(
        "# Written by `dw dev`: the code server it runs and restarts (dw_platform/devenv/supervisor.py).\n"
        + json.dumps({"load_from": [entry]}, indent=2)
        + "\n"
    )
    return path


class CodeServer:
    """`dagster code-server start` for the code location on `socket_path`, in a process group of
    its own: the group holds the server, its `dagster api grpc` child, the run workers that child
    starts and their dbt processes."""

    def __init__(self, socket_path: Path, output: IO | None = None):
        self.socket_path = socket_path
        self.output = output
        self.process: subprocess.Popen | None = None
        self.serving_since: float | None = None

    def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)  # left by a killed server
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "code-server",
                "start",
                "--socket",
                str(self.socket_path),
                "--module-name",
                CODE_MODULE,
                "--working-directory",
                str(PROJECT_ROOT),
                "--location-name",
                LOCATION_NAME,
                "--log-level",
                "warning",
            ],
            cwd=PROJECT_ROOT,
            # As under `dagster dev`: dagster-dbt re-parses an edited dbt project when the code loads.
            env={**os.environ, "DAGSTER_IS_DEV_CLI": "1"},
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output else None,
            start_new_session=True,
        )
        self.serving_since = None

    def serving(self) -> bool:
        """It listens: it binds its socket once its `dagster api grpc` child has loaded the code."""
        if self.serving_since is None:
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket_path))
                self.serving_since = time.monotonic()
            except OSError:
                return False
        return True

    def settled(self) -> bool:
        return self.serving() and time.monotonic() - self.serving_since >= CODE_SERVER_SETTLE_S

    def wait_serving(self, timeout_s: float = 300) -> None:
        """Until it serves, exits, or `timeout_s` passes (the webserver and the daemon started
        after it find the location loaded at once)."""
        deadline = time.monotonic() + timeout_s
        while not self.serving() and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)

    def api_grpc_pids(self) -> list[int]:
        """Its `dagster api grpc` processes (one; two for a moment while the UI's Reload swaps them)."""
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "grpc" in child.cmdline():
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return pids

    def gone(self) -> str | None:
        """Why the code server no longer serves, or None while it serves or starts."""
        if self.process.poll() is not None:
            return f"the code server exited (code {self.process.returncode})"
        if self.serving() and not self.api_grpc_pids():
            return "the code server's `dagster api grpc` process is gone"
        return None

    def restart(self) -> None:
        self.stop(grace_s=0)
        self.start()

    def stop(self, grace_s: float = 30) -> None:
        if self.process is not None:
            embedded.stop_process(self.process, grace_s=grace_s, group=True)


class RunWorkers:
    """Fails the running runs launched on the code server at `socket_path` whose run worker
    process is gone (the run workers are processes on this machine: Dagster's default launcher)."""

    def __init__(self, instance: dg.DagsterInstance, socket_path: Path):
        self.instance = instance
        self.socket_path = str(socket_path)
        self._workers: dict[str, tuple[int, float]] = {}  # run id -> (pid, when it started)
        self._gone_since: dict[str, float] = {}

    def fail_the_dead(self) -> list[str]:
        """One check; returns the ids of the runs it failed."""
        failed = []
        now = time.monotonic()
        started = self.instance.get_runs(dg.RunsFilter(statuses=list(_RUNNING)))
        for run in started:
            if json.loads(run.tags.get(GRPC_INFO_TAG, "{}")).get("socket") != self.socket_path:
                continue
            worker = self._worker(run.run_id)
            if worker is None or _alive(*worker):
                self._gone_since.pop(run.run_id, None)
                continue
            if now - self._gone_since.setdefault(run.run_id, now) < WORKER_GONE_GRACE_S:
                continue
            current = self.instance.get_run_by_id(run.run_id)
            if current is None or current.status not in _RUNNING:
                continue
            message = (
                f"The run worker process (pid {worker[0]}) is gone without ending the run (killed, or killed "
                "with its code server): `dw dev` marks the run failed."
            )
            self.instance.report_run_failed(current, message)
            failed.append(run.run_id)
        for run_id in set(self._workers) - {run.run_id for run in started}:
            self._workers.pop(run_id, None)
            self._gone_since.pop(run_id, None)
        return failed

    def _worker(self, run_id: str) -> tuple[int, float] | None:
        if run_id not in self._workers:
            records = self.instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20
            ).records
            for record in records:
                found = _WORKER_STARTED.search(record.event_log_entry.message or "")
                if found:
                    self._workers[run_id] = (int(found.group(1)), record.event_log_entry.timestamp)
                    break
        return self._workers.get(run_id)


def _alive(pid: int, started: float) -> bool:
    """The process `pid` that wrote its start at `started` still runs (not a later one reusing the pid)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= started + 1
    except psutil.NoSuchProcess:
        return False


class Supervisor(threading.Thread):
    """The loop described in the module docstring."""

    def __init__(
        self, code_server: CodeServer, run_workers: RunWorkers, embedded_postgres: bool, output: IO | None = None
    ):
        super().__init__(name="dw-dev-supervisor", daemon=True)
        self.output = output
        self.code_server = code_server
        self.run_workers = run_workers
        self.embedded_postgres = embedded_postgres
        self.stopping = threading.Event()
        self._backoff_s = 0.0
        self._database_down = False

    def run(self) -> None:
        while not self.stopping.wait(POLL_S):
            try:
                if self.embedded_postgres:
                    self._keep_postgres()
                self._keep_code_server()
                if self.code_server.settled():
                    self._fail_dead_runs()
            except Exception as error:  # noqa: BLE001 (the supervisor itself must not stop)
                self.say(f"supervising failed this time ({type(error).__name__}: {error}); trying again")

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

    def say(self, message: str) -> None:
        """What it did, where `dw dev` prints (or to the stack's text `output`)."""
        print(f"dw dev: {message}", file=self.output or sys.stderr, flush=True)

    def _keep_postgres(self) -> None:
        try:
            if embedded.restart_postgres_if_gone():
                self.say("the embedded PostgreSQL was gone: started it again")
        except Exception as error:  # noqa: BLE001 (anything: the next second tries again)
            self.say(f"starting the embedded PostgreSQL again failed ({type(error).__name__}); trying again")

    def _keep_code_server(self) -> None:
        why = self.code_server.gone()
        if why is None:
            if self.code_server.settled():
                self._backoff_s = 0.0
            return
        if self._backoff_s:
            self.say(f"{why}; starting it again in {self._backoff_s:.0f} s")
            if self.stopping.wait(self._backoff_s):
                return
        else:
            self.say(f"{why}; starting it again (the runs it ran are failed once it serves)")
        self.code_server.restart()
        # A server that dies again before it settled (say, out of memory) is not restarted in a loop.
        self._backoff_s = min(max(2 * self._backoff_s, 5.0), 60.0)

    def _fail_dead_runs(self) -> None:
        try:
            for run_id in self.run_workers.fail_the_dead():
                self.say(f"run {run_id} failed: its run worker process is gone")
            if self._database_down:
                self.say("the Dagster instance database answers again")
            self._database_down = False
        except Exception as error:  # noqa: BLE001 (an instance outage: the next check reconnects)
            if not self._database_down:
                self.say(
                    f"cannot check the runs: the Dagster instance database is unreachable ({type(error).__name__})"
                )
            self._database_down = True


class DevStack:
    def __init__(self, dagster_dev: subprocess.Popen, code_server: CodeServer):
        self.dagster_dev = dagster_dev
        self.code_server = code_server

    def wait(self) -> int:
        return self.dagster_dev.wait()


@contextmanager
def dagster_dev(port: int, embedded_postgres: bool, output: IO | None = None) -> Iterator[DevStack]:
    """The code server, then `dagster dev` (webserver and daemon, warnings and errors only: at info
    the daemon logs two lines per sensor tick) on 127.0.0.1:`port`, and the supervisor; all stopped
    on exit (the supervisor first, the code server last)."""
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    socket_path = code_server_socket(dagster_home)
    code_server = CodeServer(socket_path, output)
    dev = None
    try:
        code_server.start()
        code_server.wait_serving()
        # Started from DAGSTER_HOME so the instance reads that folder's dagster.yaml (a link to
        # ours); its own process group, so the webserver and the daemon stop with it.
        dev = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-w",
                str(workspace_file(dagster_home, socket_path)),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=dagster_home,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
        )
        instance = dg.DagsterInstance.get()
        supervisor = Supervisor(code_server, RunWorkers(instance, socket_path), embedded_postgres, output)
        supervisor.start()
        try:
            yield DevStack(dev, code_server)
        finally:
            supervisor.stop()
            instance.dispose()
    finally:
        if dev is not None:
            embedded.stop_process(dev, grace_s=30, group=True)
        code_server.stop()
