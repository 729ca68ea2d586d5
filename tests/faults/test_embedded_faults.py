"""Faults of the embedded default itself: a `dw` process killed with -9 must not leave the
embedded PostgreSQL running for good."""

import json
import os
import subprocess
import sys
import textwrap
import time

import psutil

START_THEN = textwrap.dedent("""
    import os, sys
    from dw_platform.devenv import embedded
    with embedded.services(env_file=None, needs=()):  # the warehouse PostgreSQL only
        print(os.environ["DW_PG_HOST"], flush=True)
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), 9)
        if sys.argv[1] == "wait":
            sys.stdin.readline()
""")


def dw_process_env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DW_", "DAGSTER_PG_URL", "DAGSTER_HOME"))}
    env["DW_HOME"] = str(home)
    return env


def run_dw_process(home, how: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", START_THEN, how], env=dw_process_env(home), capture_output=True, text=True, timeout=120
    )


def postmaster_pid(home) -> int:
    return int((home / "pg" / "postmaster.pid").read_text().split()[0])


def test_a_killed_dw_process_does_not_keep_the_embedded_server_running_for_good(tmp_path):
    killed = run_dw_process(tmp_path, "kill")
    assert killed.returncode == -9, killed.stderr
    server = postmaster_pid(tmp_path)
    assert psutil.pid_exists(server)  # the killed process could not stop it ...
    handles = json.loads((tmp_path / "pg" / ".handle_pids.json").read_text())
    assert handles and not any(psutil.pid_exists(pid) for pid in handles)  # ... and left its dead pid

    normal = run_dw_process(tmp_path, "exit")  # the next dw process prunes the dead pid ...

    assert normal.returncode == 0, normal.stderr
    deadline = time.monotonic() + 30
    while psutil.pid_exists(server) and time.monotonic() < deadline:  # ... so its exit stops the server
        time.sleep(0.2)
    assert not psutil.pid_exists(server)


def test_the_last_dw_process_stops_a_server_another_dw_process_restarted_after_a_crash(tmp_path):
    """`dw dev` runs; its PostgreSQL is killed; `dw sql` starts it again and exits; when `dw dev`
    exits, the restarted server stops with it (pgserver only knew the postmaster it found at start)."""
    first = subprocess.Popen(
        [sys.executable, "-c", START_THEN, "wait"],
        env=dw_process_env(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout.readline(), first.stderr.read()  # the services are up
        crashed = psutil.Process(postmaster_pid(tmp_path))
        crashed.kill()
        crashed.wait(30)

        second = run_dw_process(tmp_path, "exit")  # as `dw sql` does: starts the server, leaves it to `first`

        assert second.returncode == 0, second.stderr
        restarted = postmaster_pid(tmp_path)
        assert restarted != crashed.pid and psutil.pid_exists(restarted)
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(60) == 0, first.stderr.read()
        deadline = time.monotonic() + 30
        while psutil.pid_exists(restarted) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not psutil.pid_exists(restarted)
    finally:
        first.kill()
        if (tmp_path / "pg" / "postmaster.pid").exists() and psutil.pid_exists(pid := postmaster_pid(tmp_path)):
            psutil.Process(pid).terminate()  # the test failed: leave no server behind


def test_dw_dev_stopped_with_sigterm_stops_dagster_and_the_servers_quietly(tmp_path):
    import signal
    import socket

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DW_", "DAGSTER_PG_URL", "DAGSTER_HOME"))}
    env["DW_HOME"] = str(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dw = subprocess.Popen(
        [sys.executable, "-m", "dw_platform.cli", "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert dw.poll() is None and time.monotonic() < deadline, dw.stderr.read() if dw.poll() else "timeout"
            time.sleep(1)
    family = [p for p in psutil.Process(dw.pid).children(recursive=True)]
    server = postmaster_pid(tmp_path)
    time.sleep(35)  # at least one tick of run_failure_alert (running by default, every 30 s)

    dw.send_signal(signal.SIGTERM)
    stdout, stderr = dw.communicate(timeout=90)

    assert dw.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "for sensor" not in stdout + stderr  # an idle sensor tick logs nothing
    time.sleep(2)
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [p.cmdline() for p in left]
    assert not psutil.pid_exists(server) or psutil.Process(server).status() == psutil.STATUS_ZOMBIE
