"""The zero-configuration default: a project-owned PostgreSQL and Azurite, and the environment
pointing at them.

With no `DW_PG_HOST` set (in the environment or `.env`), `services()` starts a real PostgreSQL
from the `pgserver` wheel with its state under `.dw/` and fills in every connection variable
that is not already set. With `DW_PG_HOST` set, nothing is started: the same code runs against
the configured servers. Likewise, with no `DW_BLOB_CONNECTION_STRING` or `DW_BLOB_ACCOUNT_URL`,
it starts the Azurite blob emulator (from `node_modules/`, installed by `npm install`) on a free
127.0.0.1 port with its state under `.dw/azurite`, and stops it on exit. With no
`DW_REPLICATION_SOURCE_URL`, it also starts the replication domain's source: a second pgserver
PostgreSQL under `.dw/source_pg` with `wal_level = logical`, holding the database `source_app`
(a separate server so that the warehouse's own writes never show up as replication lag).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dotenv import load_dotenv

from dw_platform.lib.warehouse import server_connection

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATABASES = ("warehouse", "dagster", "source_crm")
REPLICATION_SOURCE_DATABASE = "source_app"
# Settings the replication source server needs (applied once, with a restart, on first start).
LOGICAL_DECODING_SETTINGS = {"wal_level": "logical", "max_replication_slots": "20", "max_wal_senders": "20",
                             "max_slot_wal_keep_size": "2GB"}


def state_dir() -> Path:
    return Path(os.environ.get("DW_HOME", PROJECT_ROOT / ".dw")).resolve()


def odbc_connection_string(socket_dir: str, port: int, database: str) -> str:
    """psqlODBC to the embedded server; UseDeclareFetch makes the driver stream the result."""
    return (
        "Driver={PostgreSQL Unicode};"
        f"Servername={socket_dir};Port={port};Database={database};Username=postgres;"
        "UseDeclareFetch=1;Fetch=10000;BoolsAsChar=0"
    )


def embedded_env(socket_dir: str, port: int, home: Path) -> dict[str, str]:
    """Every connection variable for the embedded server (unix socket, local trust auth)."""
    return {
        "DW_PG_HOST": socket_dir,
        "DW_PG_PORT": str(port),
        "DW_PG_USER": "postgres",
        "DW_PG_PASSWORD": "",
        "DW_PG_DATABASE": "warehouse",
        "DW_PG_SSLMODE": "disable",
        "DW_CUSTOMER_ODBC": odbc_connection_string(socket_dir, port, "source_crm"),
        "DW_CUSTOMER_DIALECT": "postgresql",
        "DAGSTER_PG_URL": f"postgresql+psycopg2://postgres@/dagster?host={socket_dir}&port={port}",
        "DAGSTER_HOME": str(home / "dagster"),
    }


@contextmanager
def services(env_file: Path | None = PROJECT_ROOT / ".env") -> Iterator[bool]:
    """Make every connection variable usable; yields True when the embedded server is in use.

    Settings come from the environment, then `env_file` (the environment wins).
    The embedded server stops when the last process that started it exits.
    """
    if env_file is not None:
        load_dotenv(env_file, override=False)
    home = state_dir()
    with _blob_emulator(home):
        if os.environ.get("DW_PG_HOST"):
            _prepare_dagster_home(Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))))
            yield False
            return
        _start_postgres(home)
        _dev_fernet_keys(home)
        if not os.environ.get("DW_REPLICATION_SOURCE_URL"):
            os.environ["DW_REPLICATION_SOURCE_URL"] = start_replication_source(home / "source_pg")
        os.environ.setdefault("DW_LAKEHOUSE_PATH", (home / "lakehouse").as_uri())
        yield True


def _start_postgres(home: Path) -> None:
    # pgserver keeps its lock file in the user's runtime dir; give it one where none is set.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver  # only the embedded default needs it

    (home / "pg").mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(home / "pg", cleanup_mode="stop")
    info = server.get_postmaster_info()
    env = embedded_env(str(info.socket_dir), info.port, home)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    _create_databases()
    _prepare_dagster_home(Path(os.environ["DAGSTER_HOME"]))


def start_replication_source(pgdata: Path, database: str = REPLICATION_SOURCE_DATABASE) -> str:
    """A pgserver PostgreSQL at `pgdata` that can serve logical decoding, with `database` in it;
    returns its URL (admin role, unix socket). Stops when the last process using it exits.

    A fresh server starts with `wal_level = replica`; the settings are written with ALTER SYSTEM
    and the server restarted once (later starts read them from postgresql.auto.conf).
    """
    import pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    with _admin_connection(server) as conn:
        current = {name: conn.execute(f"show {name}").fetchone()[0] for name in LOGICAL_DECODING_SETTINGS}
        missing = {k: v for k, v in LOGICAL_DECODING_SETTINGS.items() if current[k] != v}
        for name, value in missing.items():
            conn.execute(f"alter system set {name} = '{value}'")
    if missing:  # a new server: stop it (pgserver's own pg_ctl stop, as the last handle) and start again
        server.cleanup()
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    with _admin_connection(server) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone():
            conn.execute(f'create database "{database}"')
    info = server.get_postmaster_info()
    return f"postgresql://postgres@/{database}?host={info.socket_dir}&port={info.port}"


def _admin_connection(server):
    import psycopg

    info = server.get_postmaster_info()
    return psycopg.connect(host=str(info.socket_dir), port=info.port, user="postgres", dbname="postgres",
                           autocommit=True)


def blob_configured() -> bool:
    return bool(os.environ.get("DW_BLOB_CONNECTION_STRING") or os.environ.get("DW_BLOB_ACCOUNT_URL"))


@contextmanager
def _blob_emulator(home: Path) -> Iterator[None]:
    """Azurite as a child process when no blob storage is configured; stopped on exit.

    A second `dw` process on the same state folder (say `dw demo` while `dw dev` runs) uses the
    running emulator instead of starting another one on the same files, and leaves it running.
    """
    if blob_configured():
        yield
        return
    from dw_platform.lib.blob import azurite_connection_string

    location = home / "azurite"
    running = _running_azurite(location)
    if running is not None:
        os.environ["DW_BLOB_CONNECTION_STRING"] = azurite_connection_string(running)
        try:
            yield
        finally:
            os.environ.pop("DW_BLOB_CONNECTION_STRING", None)
        return
    process, port = start_azurite(location)
    endpoint = location / "endpoint.json"
    endpoint.write_text(json.dumps({"pid": process.pid, "port": port}))
    os.environ["DW_BLOB_CONNECTION_STRING"] = azurite_connection_string(port)
    try:
        yield
    finally:
        os.environ.pop("DW_BLOB_CONNECTION_STRING", None)
        stop_process(process)
        endpoint.unlink(missing_ok=True)


def _running_azurite(location: Path) -> int | None:
    """The port of an Azurite another process started on `location`, if it still answers."""
    try:
        info = json.loads((location / "endpoint.json").read_text())
        os.kill(info["pid"], 0)
        socket.create_connection(("127.0.0.1", info["port"]), timeout=0.5).close()
        return int(info["port"])
    except (OSError, ValueError, KeyError):
        return None


def azurite_command() -> list[str]:
    local = PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return [str(local)]
    found = shutil.which("azurite-blob")
    if found:
        return [found]
    raise RuntimeError(
        "the Azurite blob emulator is not installed: run `npm install` in the project root "
        "(scripts/bootstrap.sh does), or set DW_BLOB_CONNECTION_STRING to a real storage account"
    )


def start_azurite(location: Path, timeout_s: float = 30) -> tuple[subprocess.Popen, int]:
    """Start Azurite's blob service on a free 127.0.0.1 port; returns the process and the port."""
    location.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = open(location / "azurite.log", "ab")
    process = subprocess.Popen(
        [*azurite_command(), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location),
         "--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    log.close()
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {process.returncode}; see {location / 'azurite.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, port
        except OSError:
            if time.monotonic() > deadline:
                stop_process(process)
                raise RuntimeError(f"Azurite did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")
            time.sleep(0.1)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dev_fernet_keys(home: Path) -> None:
    """A development Fernet key for the sales domain, generated once into `.dw/` (embedded only)."""
    if os.environ.get("DW_SALES_FERNET_KEYS"):
        return
    path = home / "sales_fernet_keys"
    if not path.exists():
        from cryptography.fernet import Fernet

        key = Fernet.generate_key().decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    os.environ["DW_SALES_FERNET_KEYS"] = path.read_text().strip()


def _create_databases() -> None:
    with server_connection("postgres") as conn:
        existing = {r[0] for r in conn.execute("select datname from pg_database")}
        for name in DATABASES:
            if name not in existing:
                conn.execute(f'create database "{name}"')


def _prepare_dagster_home(home: Path) -> None:
    """DAGSTER_HOME holds the instance's local files; its dagster.yaml is the project's."""
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if not link.exists():
        link.symlink_to(PROJECT_ROOT / "dagster.yaml")
