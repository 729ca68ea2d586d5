"""The zero-configuration default: a project-owned PostgreSQL, and the environment pointing at it.

With no `DW_PG_HOST` set (in the environment or `.env`), `services()` starts a real PostgreSQL
from the `pgserver` wheel with its state under `.dw/` and fills in every connection variable
that is not already set. With `DW_PG_HOST` set, nothing is started: the same code runs against
the configured servers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dotenv import load_dotenv

from dw_platform.lib.warehouse import server_connection

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATABASES = ("warehouse", "dagster", "source_crm")


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
    # Tools installed beside this interpreter (dbt, dagster) must be found by subprocesses.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    home = state_dir()
    if os.environ.get("DW_PG_HOST"):
        _prepare_dagster_home(Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))))
        yield False
        return

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
    yield True


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
