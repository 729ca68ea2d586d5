"""The zero-configuration default: a project-owned PostgreSQL and Azurite, and the environment
pointing at them.

With no `DW_PG_HOST` set (in the environment or `.env`), `services()` starts a real PostgreSQL
from the `pgserver` wheel with its state under `.dw/` and fills in every connection variable
that is not already set. With `DW_PG_HOST` set, nothing is started: the same code runs against
the configured servers. Likewise, with no `DW_BLOB_CONNECTION_STRING` or `DW_BLOB_ACCOUNT_URL`,
it starts the Azurite blob emulator (from `node_modules/`, installed by `npm install`) on a free
127.0.0.1 port with its state under `.dw/azurite`, and stops it on exit. With no
`DW_SOFTCART_ODBC`, it starts a project-owned MariaDB (Debian's `mariadbd`) for the SoftCart
source: data under `.dw/mariadb`, a unix socket there and a free 127.0.0.1 port, stopped on exit.
Each server besides the warehouse starts only when a domain that is wanted needs it (the
`services` of its entry in `dw_platform/domains.py`): `dw drop sales` starts no MariaDB.

The embedded PostgreSQL is not open: it listens on its unix socket only, every connection needs
a password (scram-sha-256; generated secrets kept mode 0600 under `.dw/`), and the pipeline runs
as the role `dw`, which owns the warehouse and Dagster databases and may read the tables of the
sample sources, nothing more (no other database's tables: it is no member of `pg_read_all_data`).
The superuser's password is never put in the environment: set-up work (creating databases,
seeding sample sources) uses `admin_connection`. `.dw/` and everything the
services write there is readable by its owner only.

With no `DW_REPLICATION_SOURCE_URL`, it also starts the replication domain's source: a second
pgserver PostgreSQL under `.dw/source_pg` with `wal_level = logical`, holding the database
`source_app` (a separate server, so the warehouse's own writes are never decoded by the slot nor
counted as replication lag). It is closed the same way (password only, socket only). The
pipeline reads it as the role `dw_replication`: REPLICATION and SELECT on the published tables, not
a superuser (what a DBA grants, `grant_replication_reads`); set-up work there (creating databases,
seeding the sample) uses `source_admin_connection`.

With `DW_EXECUTOR=celery` and no `DW_REDIS_URL`, it starts Redis (Debian's `redis-server`) as the
Celery broker and result backend: data under `.dw/redis` (append-only, so queued steps survive a
restart), 127.0.0.1 only, a generated password (`.dw/redis_password`, mode 0600) in the 0600
config file, stopped on exit. In process (the default), Redis is neither started nor needed.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import psycopg
from dotenv import load_dotenv
from psycopg import sql

from dw_platform.domains import services_needed
from dw_platform.lib.paths import PROJECT_ROOT

PIPELINE_ROLE = "dw"
# The replication source's reader: LOGIN REPLICATION, SELECT on the published tables, nothing more.
REPLICATION_ROLE = "dw_replication"
# Databases the pipeline owns, and sample sources it may only read.
OWNED_DATABASES = ("warehouse", "dagster")
SOURCE_DATABASES = ("source_crm",)
# Server settings of the embedded PostgreSQL. client_connection_check_interval: a backend whose
# client died (kill -9 of a run) notices within seconds and rolls back, releasing its locks,
# instead of holding them until its next write.
SERVER_SETTINGS = {"client_connection_check_interval": "5s"}
REPLICATION_SOURCE_DATABASE = "source_app"
# Settings the replication source server needs on top (applied once, with a restart, on first start).
LOGICAL_DECODING_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_slot_wal_keep_size": "2GB",
}
PG_HBA = """# Written by dw_platform: every connection authenticates with a password.
local   all          all                    scram-sha-256
host    all          all   127.0.0.1/32     scram-sha-256
host    all          all   ::1/128          scram-sha-256
local   replication  all                    scram-sha-256
host    replication  all   127.0.0.1/32     scram-sha-256
"""


def state_dir() -> Path:
    return Path(os.environ.get("DW_HOME", PROJECT_ROOT / ".dw")).resolve()


def odbc_connection_string(socket_dir: str, port: int, database: str, user: str, password: str) -> str:
    """psqlODBC to the embedded server; UseDeclareFetch makes the driver stream the result."""
    return (
        "Driver={PostgreSQL Unicode};"
        f"Servername={socket_dir};Port={port};Database={database};Username={user};Password={password};"
        "UseDeclareFetch=1;Fetch=10000;BoolsAsChar=0"
    )


def embedded_env(socket_dir: str, port: int, home: Path, password: str) -> dict[str, str]:
    """Every connection variable for the embedded server (unix socket, the pipeline role)."""
    return {
        "DW_PG_HOST": socket_dir,
        "DW_PG_PORT": str(port),
        "DW_PG_USER": PIPELINE_ROLE,
        "DW_PG_PASSWORD": password,
        "DW_PG_DATABASE": "warehouse",
        "DW_PG_SSLMODE": "disable",
        "DW_CUSTOMER_ODBC": odbc_connection_string(socket_dir, port, "source_crm", PIPELINE_ROLE, password),
        "DW_CUSTOMER_DIALECT": "postgresql",
        "DAGSTER_PG_URL": f"postgresql+psycopg2://{PIPELINE_ROLE}:{password}@/dagster?host={socket_dir}&port={port}",
        "DAGSTER_HOME": str(home / "dagster"),
    }


@contextmanager
def services(env_file: Path | None = PROJECT_ROOT / ".env", needs: Iterable[str] | None = None) -> Iterator[bool]:
    """Make every connection variable usable; yields True when the embedded server is in use.

    Settings come from the environment, then `env_file` (the environment wins). `needs` names
    the servers wanted besides the warehouse PostgreSQL (`dw_platform.domains.SERVICES`; by
    default what the registered domains need). The embedded server stops when the last process
    that started it exits.
    """
    if env_file is not None:
        load_dotenv(env_file, override=False)
    needs = services_needed() if needs is None else set(needs)
    home = state_dir()
    previous_umask = os.umask(0o077)  # what the services write under .dw/ is the owner's only
    try:
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(_home_mode())
        with (
            _blob_emulator(home) if "azurite" in needs else nullcontext(),
            _softcart_source(home) if "mariadb" in needs else nullcontext(),
            _celery_broker(home),
        ):
            if os.environ.get("DW_PG_HOST"):
                _prepare_dagster_home(Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))))
                yield False
                return
            _start_postgres(home)
            _dev_fernet_keys(home)
            if "replication_source" in needs and not os.environ.get("DW_REPLICATION_SOURCE_URL"):
                os.environ["DW_REPLICATION_SOURCE_URL"] = start_replication_source(home)
            os.environ.setdefault("DW_LAKEHOUSE_PATH", (home / "lakehouse").as_uri())
            yield True
    finally:
        os.umask(previous_umask)


def start_postgres() -> str:
    """Only the embedded PostgreSQL, for a Dagster instance started without `dw` (see
    `dw_platform/devenv/instance.py`): started (or joined), the connection variables it fills in set
    where unset; it stops when the last process using it exits. Returns DAGSTER_PG_URL."""
    home = state_dir()
    previous_umask = os.umask(0o077)
    try:
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(_home_mode())
        _start_postgres(home)
        _dev_fernet_keys(home)
    finally:
        os.umask(previous_umask)
    return os.environ["DAGSTER_PG_URL"]


def _start_postgres(home: Path) -> None:
    # pgserver keeps its lock file in the user's runtime dir; give it one where none is set.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver  # only the embedded default needs it

    pgdata = home / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    _prune_dead_handles(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    _stop_a_restarted_server_too(server)
    home.chmod(_home_mode())  # pgserver opens the folders above its data for reading
    info = server.get_postmaster_info()
    password = _secret(home, "pg_dw_password")
    _secure(pgdata, str(info.socket_dir), info.port, _secret(home, "pg_admin_password"), password)
    env = embedded_env(str(info.socket_dir), info.port, home, password)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    _prepare_dagster_home(Path(os.environ["DAGSTER_HOME"]))


def restart_postgres_if_gone() -> bool:
    """Start the embedded PostgreSQL again when its postmaster is gone (killed, crashed), on the
    same data, socket and port, so every process's connection settings stay right; True when it
    did. A killed postmaster that its parent has not reaped yet counts as still there."""
    import pgserver
    from pgserver.utils import PostmasterInfo

    pgdata = (state_dir() / "pg").resolve()
    running = PostmasterInfo.read_from_pgdata(pgdata)
    if running is not None and running.is_running():
        return False
    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # this process's handle
    with pgserver.PostgresServer._lock:
        server.ensure_postgres_running()
    return True


def start_replication_source(home: Path, database: str = REPLICATION_SOURCE_DATABASE) -> str:
    """The replication source server (`home`/source_pg) running with logical decoding, with
    `database` in it, readable by the replication role and published (`grant_replication_reads`);
    returns the role's URL (unix socket, password). Stops when the last process using it exits. A
    new server starts with `wal_level = replica`: the settings are written with ALTER SYSTEM and it
    is restarted once (later starts read postgresql.auto.conf)."""
    import pgserver

    pgdata = home / "source_pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    _prune_dead_handles(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    home.chmod(_home_mode())
    password = _secret(home, "pg_source_admin_password")
    reader_password = _secret(home, "pg_source_replication_password")

    def connect(dbname: str = "postgres") -> psycopg.Connection:
        info = server.get_postmaster_info()
        return psycopg.connect(
            host=str(info.socket_dir),
            port=info.port,
            user="postgres",
            password=password,
            dbname=dbname,
            autocommit=True,
        )

    with connect() as conn:
        conn.execute(sql.SQL("alter role postgres password {}").format(sql.Literal(password)))
        restart = any(
            conn.execute(sql.SQL("show {}").format(sql.Identifier(name))).fetchone()[0] != value
            for name, value in LOGICAL_DECODING_SETTINGS.items()
        )
        for name, value in {**SERVER_SETTINGS, **LOGICAL_DECODING_SETTINGS}.items():
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        (pgdata / "pg_hba.conf").write_text(PG_HBA)
        conn.execute("select pg_reload_conf()")
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (REPLICATION_ROLE,)).fetchone()
        conn.execute(
            sql.SQL(
                ("alter" if exists else "create")
                + " role {} login replication nosuperuser nocreatedb nocreaterole password {}"
            ).format(sql.Identifier(REPLICATION_ROLE), sql.Literal(reader_password))
        )
        if not conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone():
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    with connect(database) as conn:
        grant_replication_reads(conn, os.environ.get("DW_REPLICATION_PUBLICATION") or f"dw_{database}")
    if restart:  # wal_level and friends: stop (pgserver's own pg_ctl stop, as the last handle), start
        server.cleanup()
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        home.chmod(_home_mode())
    info = server.get_postmaster_info()
    return f"postgresql://{REPLICATION_ROLE}:{reader_password}@/{database}?host={info.socket_dir}&port={info.port}"


def grant_replication_reads(conn: psycopg.Connection, publication: str, schema: str = "public") -> None:
    """What a DBA does in a source database for the replication role (`conn`: its owner or a
    superuser): SELECT on the schema's tables, now and as they are created, and the publication of
    every table (FOR ALL TABLES needs a superuser, so the pipeline cannot create it itself)."""
    role, schema_id = sql.Identifier(REPLICATION_ROLE), sql.Identifier(schema)
    conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema_id, role))
    conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(schema_id, role))
    conn.execute(sql.SQL("alter default privileges in schema {} grant select on tables to {}").format(schema_id, role))
    if not conn.execute("select 1 from pg_publication where pubname = %s", (publication,)).fetchone():
        conn.execute(
            sql.SQL("create publication {} for all tables with (publish_via_partition_root = true)").format(
                sql.Identifier(publication)
            )
        )


def source_admin_connection(dbname: str | None = None) -> psycopg.Connection:
    """An autocommit connection as the embedded replication source's superuser, for set-up work
    only (creating databases, seeding the sample, granting); `dbname` defaults to the database of
    DW_REPLICATION_SOURCE_URL. Only the embedded default has one."""
    from psycopg.conninfo import conninfo_to_dict

    secret = state_dir() / "pg_source_admin_password"
    if not secret.exists() or not os.environ.get("DW_REPLICATION_SOURCE_URL"):
        raise RuntimeError("no embedded replication source is running: its admin connection exists only for it")
    reader = conninfo_to_dict(os.environ["DW_REPLICATION_SOURCE_URL"])
    return psycopg.connect(
        host=reader["host"],
        port=reader["port"],
        user="postgres",
        password=secret.read_text().strip(),
        dbname=dbname or reader["dbname"],
        autocommit=True,
    )


def _home_mode() -> int:
    """Owner only; as root, pgserver runs PostgreSQL as the user `pgserver`, which must pass
    through .dw/ to its data folder (it cannot list or read anything else there)."""
    return 0o711 if os.geteuid() == 0 else 0o700


def _prune_dead_handles(pgdata: Path) -> None:
    """pgserver stops the server when the last process holding a handle exits, counting handles
    in a pid list; a `dw` killed with -9 never removes its pid, and the server would then run
    for good. Forget the pids of processes that are gone."""
    import psutil
    from pgserver import PostgresServer
    from pgserver.utils import DiskList

    with PostgresServer._lock:
        handles = DiskList(pgdata / ".handle_pids.json")
        alive = [pid for pid in handles.get() if psutil.pid_exists(pid)]
        if alive != handles.get():
            handles.put(alive)


def _stop_a_restarted_server_too(server) -> None:
    """pgserver's exit hook stops the server (when this process holds the last handle) only if
    the postmaster it found at start still runs: a server killed and started again meanwhile (by
    `dw sql` or another `dw` process, or by `dw dev` itself) would be left running. Just before
    that hook (atexit runs the last registered first), point it at the postmaster running now."""
    from pgserver.utils import PostmasterInfo

    def follow_restart() -> None:
        running = PostmasterInfo.read_from_pgdata(server.pgdata)
        if running is not None and running.is_running():
            server._postmaster_info = running

    atexit.register(follow_restart)


def _secret(home: Path, name: str) -> str:
    """A generated password kept in `.dw/<name>` (mode 0600), created once."""
    path = home / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def admin_connection(dbname: str) -> psycopg.Connection:
    """An autocommit connection as the embedded server's superuser, for set-up work only
    (creating databases, seeding sample sources). Only the embedded default has one."""
    home = state_dir()
    if not (home / "pg_admin_password").exists() or not os.environ.get("DW_PG_HOST"):
        raise RuntimeError("no embedded PostgreSQL is running: the admin connection exists only for it")
    return psycopg.connect(
        host=os.environ["DW_PG_HOST"],
        port=os.environ["DW_PG_PORT"],
        user="postgres",
        password=_secret(home, "pg_admin_password"),
        dbname=dbname,
        autocommit=True,
    )


def _secure(pgdata: Path, socket_dir: str, port: int, admin_password: str, password: str) -> None:
    """Passwords for the superuser and the pipeline role, password-only pg_hba, the server
    settings, and the databases: owned by the pipeline role, or readable by it (sources)."""
    with psycopg.connect(
        host=socket_dir, port=port, user="postgres", password=admin_password, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql.SQL("alter role postgres password {}").format(sql.Literal(admin_password)))
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (PIPELINE_ROLE,)).fetchone()
        verb = "alter" if exists else "create"
        conn.execute(
            sql.SQL(verb + " role {} login nosuperuser nocreatedb nocreaterole password {}").format(
                sql.Identifier(PIPELINE_ROLE), sql.Literal(password)
            )
        )
        # Least privilege: the role reads the sample sources' tables (below), not every table on
        # the server as an earlier release let it (pg_read_all_data).
        conn.execute(sql.SQL("revoke pg_read_all_data from {}").format(sql.Identifier(PIPELINE_ROLE)))
        for name, value in SERVER_SETTINGS.items():
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        (pgdata / "pg_hba.conf").write_text(PG_HBA)
        conn.execute("select pg_reload_conf()")
        owners = dict(conn.execute("select datname, pg_get_userbyid(datdba) from pg_database").fetchall())
        for name in OWNED_DATABASES + SOURCE_DATABASES:
            owner = PIPELINE_ROLE if name in OWNED_DATABASES else "postgres"
            if name not in owners:
                conn.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(name), sql.Identifier(owner)))
            elif owners[name] != owner:  # a state folder from before the pipeline role existed
                conn.execute(
                    sql.SQL("alter database {} owner to {}").format(sql.Identifier(name), sql.Identifier(owner))
                )
        for name in OWNED_DATABASES + SOURCE_DATABASES:
            with psycopg.connect(
                host=socket_dir, port=port, user="postgres", password=admin_password, dbname=name, autocommit=True
            ) as db:
                db.execute(HAND_OVER_OBJECTS.format(role=PIPELINE_ROLE) if name in OWNED_DATABASES else SOURCE_READS)


# What the pipeline role may do in a sample source database: read the tables the set-up role
# (postgres) creates there, now and later (default privileges), and nothing else.
SOURCE_READS = sql.SQL(
    """
do $$
declare r record;
begin
    for r in select nspname from pg_namespace where nspname !~ '^pg_' and nspname <> 'information_schema' loop
        execute format('grant usage on schema %I to {role}', r.nspname);
        execute format('grant select on all tables in schema %I to {role}', r.nspname);
    end loop;
end $$;
alter default privileges for role postgres grant usage on schemas to {role};
alter default privileges for role postgres grant select on tables to {role};
"""
).format(role=sql.Identifier(PIPELINE_ROLE))


def create_source_database(name: str) -> None:
    """A database standing in for a source system the pipeline reads (embedded default only):
    owned by the superuser; the pipeline role may read the tables created in it, nothing more."""
    with admin_connection("postgres") as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    with admin_connection(name) as conn:
        conn.execute(SOURCE_READS)


# Gives the pipeline role what an older state folder created as the superuser in its databases:
# schemas, tables, views, sequences (owned ones follow their tables) and functions (dbt macros
# create some). Only objects it does not own yet are touched, so this runs at every start without
# taking a lock on the tables a running load uses.
HAND_OVER_OBJECTS = """
do $$
declare r record;
begin
    for r in select nspname from pg_namespace
             where nspname !~ '^pg_' and nspname <> 'information_schema'
               and nspowner <> '{role}'::regrole loop
        execute format('alter schema %I owner to {role}', r.nspname);
    end loop;
    for r in select c.oid::regclass as name, c.relkind from pg_class c
             join pg_namespace n on n.oid = c.relnamespace
             where c.relkind in ('r', 'p', 'v', 'm', 'S') and n.nspname !~ '^pg_'
               and n.nspname <> 'information_schema' and c.relowner <> '{role}'::regrole
               and not exists (select from pg_depend d where d.objid = c.oid and d.deptype in ('a', 'i')) loop
        execute format('alter %s %s owner to {role}',
                       case r.relkind when 'v' then 'view' when 'm' then 'materialized view'
                                      when 'S' then 'sequence' else 'table' end, r.name);
    end loop;
    for r in select p.oid::regprocedure as name from pg_proc p
             join pg_namespace n on n.oid = p.pronamespace
             where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' and p.proowner <> '{role}'::regrole
               and not exists (select from pg_depend d where d.objid = p.oid and d.deptype = 'e') loop
        execute format('alter routine %s owner to {role}', r.name);
    end loop;
end $$
"""


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


@contextmanager
def _softcart_source(home: Path) -> Iterator[None]:
    """MariaDB as a child process when no DW_SOFTCART_ODBC is set; stopped on exit. A second
    `dw` process on the same state folder uses the running server (its `endpoint.json`)."""
    if os.environ.get("DW_SOFTCART_ODBC"):
        yield
        return
    location = home / "mariadb"
    location.mkdir(parents=True, exist_ok=True)
    with _file_lock(location / "start.lock"):  # two processes starting at once: one starts, one reuses
        running, process = running_mariadb(location), None
        if running is None:
            process, port = start_mariadb(location)
            running = MariaDB(location, process.pid, port)
            (location / "endpoint.json").write_text(json.dumps({"pid": process.pid, "port": port}))
        running.create_database("softcart")
    os.environ["DW_SOFTCART_ODBC"] = running.odbc_connection_string("softcart")
    try:
        yield
    finally:
        os.environ.pop("DW_SOFTCART_ODBC", None)
        if process is not None:
            stop_process(process, grace_s=60)  # InnoDB flushes on a clean shutdown
            (location / "endpoint.json").unlink(missing_ok=True)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MariaDB:
    """A project-owned MariaDB server: data in `location/data`, a unix socket in `location`.
    root logs in over the socket only (unix_socket authentication: no password exists)."""

    def __init__(self, location: Path, pid: int, port: int):
        self.location = location
        self.pid = pid
        self.port = port

    @property
    def socket_path(self) -> Path:
        return self.location / "mariadb.sock"

    def odbc_connection_string(self, database: str) -> str:
        """MariaDB Connector/ODBC over the socket; NO_CACHE=1 streams results instead of buffering them."""
        return f"Driver={{MariaDB Unicode}};Socket={self.socket_path};Database={database};User=root;NO_CACHE=1"

    def execute(self, statement: str) -> None:
        import pyodbc

        conn = pyodbc.connect(self.odbc_connection_string(""), autocommit=True, timeout=10)
        try:
            conn.cursor().execute(statement)
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        self.execute(f"create database if not exists `{name}` character set utf8mb4")

    def drop_database(self, name: str) -> None:
        self.execute(f"drop database if exists `{name}`")

    def answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket_path))
            return True
        except OSError:
            return False


def running_mariadb(location: Path) -> MariaDB | None:
    """The MariaDB another process started on `location`, if it is still that server and answers.
    A dead or foreign pid (a crashed `dw`, a reused pid) is pruned, not trusted."""
    try:
        info = json.loads((location / "endpoint.json").read_text())
        cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes()
        server = MariaDB(location, int(info["pid"]), int(info["port"]))
        if b"mariadbd" in cmdline and str(location).encode() in cmdline and server.answers():
            return server
    except (OSError, ValueError, KeyError):
        pass
    (location / "endpoint.json").unlink(missing_ok=True)
    return None


def mariadb_binaries() -> tuple[str, str]:
    found = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if Path("/usr/sbin/mariadbd").exists() else None)
    install = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
    if found is None or not Path(install).exists():
        raise RuntimeError(
            "MariaDB is not installed: run scripts/bootstrap.sh (apt-get install mariadb-server odbc-mariadb), "
            "or set DW_SOFTCART_ODBC to a real MySQL/MariaDB server"
        )
    return found, install


def start_mariadb(location: Path, timeout_s: float = 60) -> tuple[subprocess.Popen, int]:
    """Initialise `location/data` once (root authenticates by socket: no password anywhere), then
    start `mariadbd` on a socket in `location` and a free 127.0.0.1 port; returns the process and the port."""
    mariadbd, install_db = mariadb_binaries()
    data = location / "data"
    log = location / "mariadb.log"
    if len(str(location / "mariadb.sock")) > 100:
        raise RuntimeError(f"the state folder {location} is too deep for a unix socket path: set DW_HOME shorter")
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    if not (data / "mysql").is_dir():
        shutil.rmtree(data, ignore_errors=True)  # a half-initialised folder from an interrupted start
        with open(log, "ab") as out:
            done = subprocess.run(
                [
                    install_db,
                    "--no-defaults",
                    f"--datadir={data}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                    *as_root,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed with code {done.returncode}; see {log}")
    port = _free_port()
    server = MariaDB(location, 0, port)
    server.socket_path.unlink(missing_ok=True)  # left by a server that was killed
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={server.socket_path}",
                "--bind-address=127.0.0.1",
                f"--port={port}",
                f"--pid-file={location / 'mariadb.pid'}",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                *as_root,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + timeout_s
    while not server.answers():
        if process.poll() is not None:
            raise RuntimeError(f"mariadbd exited with code {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"mariadbd did not answer on {server.socket_path} within {timeout_s:.0f}s; see {log}")
        time.sleep(0.1)
    return process, port


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


def start_azurite(location: Path, timeout_s: float = 30, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """Start Azurite's blob service on `port` (default: a free 127.0.0.1 port); returns the process and the port."""
    location.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    log = open(location / "azurite.log", "ab")
    process = subprocess.Popen(
        [
            *azurite_command(),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(location),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    wait_for_port(process, "Azurite", port, timeout_s, location / "azurite.log")
    return process, port


def wait_for_port(process: subprocess.Popen, name: str, port: int, timeout_s: float, log: Path) -> None:
    """Until the server `process` listens on 127.0.0.1:`port`; stopped, with an error naming its
    log, when it exits first or does not listen within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                stop_process(process)
                raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s") from None
            time.sleep(0.05)


def stop_process(process: subprocess.Popen, grace_s: float = 10, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `grace_s`. With `group`, the signals go to the process group
    the process leads (started with `start_new_session=True`), so its children stop with it."""
    if process.poll() is not None and not group:
        return

    def send(sig: int) -> None:
        try:
            os.killpg(process.pid, sig) if group else process.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
    if group:
        send(signal.SIGKILL)  # children that outlived their leader


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


INSTANCE_YAML = PROJECT_ROOT / "dagster.yaml"


def _prepare_dagster_home(home: Path) -> None:
    """DAGSTER_HOME holds the instance's local files; its dagster.yaml is a link to the project's."""
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if link.is_symlink() and link.resolve() != INSTANCE_YAML.resolve():
        link.unlink()  # a link to where an earlier release kept the file
    if not link.exists():
        link.symlink_to(INSTANCE_YAML)


def celery_wanted() -> bool:
    """The Celery executor is chosen and no Redis is configured: the embedded Redis is needed."""
    return os.environ.get("DW_EXECUTOR", "").strip() == "celery" and not os.environ.get("DW_REDIS_URL")


@contextmanager
def _celery_broker(home: Path) -> Iterator[None]:
    """Redis (Debian's `redis-server`) as a child process when DW_EXECUTOR=celery and no DW_REDIS_URL
    is set; stopped on exit. In process (the default), no Redis is started or needed. A second `dw`
    process on the same state folder (`dw workers` beside `dw dev`) uses the running server."""
    if not celery_wanted():
        yield
        return
    location = home / "redis"
    location.mkdir(parents=True, exist_ok=True)
    password = _secret(home, "redis_password")
    with _file_lock(location / "start.lock"):
        port, process = running_redis(location), None
        if port is None:
            process, port = start_redis(location, password)
            (location / "endpoint.json").write_text(json.dumps({"pid": process.pid, "port": port}))
    os.environ["DW_REDIS_URL"] = redis_url(port, password)
    try:
        yield
    finally:
        os.environ.pop("DW_REDIS_URL", None)
        if process is not None:
            stop_process(process)  # SIGTERM: Redis writes its append-only file and exits
            (location / "endpoint.json").unlink(missing_ok=True)


def redis_url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def running_redis(location: Path) -> int | None:
    """The port of the Redis another process started on `location`, if it is still that server and
    answers; a dead or foreign pid is pruned."""
    try:
        info = json.loads((location / "endpoint.json").read_text())
        cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes()
        if b"redis-server" in cmdline:
            socket.create_connection(("127.0.0.1", info["port"]), timeout=0.5).close()
            return int(info["port"])
    except (OSError, ValueError, KeyError):
        pass
    (location / "endpoint.json").unlink(missing_ok=True)
    return None


def start_redis(
    location: Path, password: str, port: int | None = None, timeout_s: float = 30
) -> tuple[subprocess.Popen, int]:
    """`redis-server` on 127.0.0.1:`port` (default: a free port) with its data in `location`: every
    client authenticates with `password` (kept in the 0600 config file, not on the command line),
    and what is queued survives a restart (append-only file, fsync every second)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError(
            "Redis is not installed: run scripts/bootstrap.sh (apt-get install redis-server), "
            "or set DW_REDIS_URL to a real Redis (or set DW_EXECUTOR=in_process)"
        )
    location.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    config = location / "redis.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(
            "# Written by dw_platform at every start.\n"
            f"bind 127.0.0.1\nport {port}\nprotected-mode yes\nrequirepass {password}\n"
            f'dir "{location}"\nappendonly yes\nappendfsync everysec\nsave ""\n'
            f'logfile "{location / "redis.log"}"\ndaemonize no\n'
        )
    process = subprocess.Popen(
        [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    wait_for_port(process, "redis-server", port, timeout_s, location / "redis.log")
    return process, port
