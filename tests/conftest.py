"""Fixtures for integration tests: a real PostgreSQL (the embedded default, always — never the
servers a developer's .env points at), psqlODBC as the source driver, a real MariaDB with the
MariaDB ODBC driver (SoftCart), Azurite, and the real dbt project."""

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import dagster as dg
import hypothesis  # noqa: F401  (imported now: see below)
import psycopg
import pytest

from dw_platform.devenv import embedded
from dw_platform.lib.blob import BlobStorage, azurite_connection_string
from dw_platform.lib.warehouse import server_connection

if TYPE_CHECKING:
    from dagster_graphql import DagsterGraphQLClient

    from dw_platform.devenv.supervisor import DevStack

# hypothesis is imported above, at the start of every session: otherwise its pytest plugin imports
# it at the end of a session that ran no fuzz test, where pytest's assertion rewriting compiles it,
# and a CPython 3.11.7 bug (gh-106905, fixed in 3.11.8) was seen to fail that compile ("SystemError:
# AST constructor recursion depth mismatch") after every test had passed.

SETTINGS = ("DW_", "DAGSTER_PG_URL", "DAGSTER_HOME")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """One embedded PostgreSQL for the session; yields the connection settings it filled in."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(SETTINGS)]:
        del os.environ[key]
    os.environ["DW_HOME"] = str(tmp_path_factory.mktemp("dw"))
    with embedded.services(env_file=None):
        from dw_platform.cli import prepare_dbt

        prepare_dbt()
        yield dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def databases(server, monkeypatch) -> Iterator[dict[str, str]]:
    """A fresh warehouse and source database for one test, wired into the environment."""
    suffix = uuid.uuid4().hex[:8]
    # The warehouse keeps its real name: dbt's manifest (parsed once per session) names the
    # database in its relations, and dagster-dbt's row counts and column metadata query them.
    names = {"warehouse": "warehouse", "source": f"src_{suffix}"}
    with embedded.admin_connection("postgres") as conn:
        conn.execute('drop database if exists "warehouse" with (force)')
        # Owned by the pipeline role like the embedded warehouse; the source only readable by it.
        conn.execute(f'create database "{names["warehouse"]}" owner {embedded.PIPELINE_ROLE}')
    embedded.create_source_database(names["source"])
    monkeypatch.setenv("DW_PG_DATABASE", names["warehouse"])
    monkeypatch.setenv(
        "DW_CUSTOMER_ODBC",
        embedded.odbc_connection_string(
            os.environ["DW_PG_HOST"],
            int(os.environ["DW_PG_PORT"]),
            names["source"],
            os.environ["DW_PG_USER"],
            os.environ["DW_PG_PASSWORD"],
        ),
    )
    yield names
    with embedded.admin_connection("postgres") as conn:  # the warehouse is replaced by the next test
        conn.execute(f'drop database if exists "{names["source"]}" with (force)')


@pytest.fixture
def source(databases) -> Iterator[psycopg.Connection]:
    """The source database as its owner (the pipeline only reads it)."""
    with embedded.admin_connection(databases["source"]) as conn:
        yield conn


@pytest.fixture
def warehouse(databases) -> Iterator[psycopg.Connection]:
    """The warehouse as the pipeline role."""
    with server_connection(databases["warehouse"]) as conn:
        yield conn


def warehouse_from_env():
    """The warehouse resource on the current test's warehouse (its DW_PG_* settings), for calling
    assets and checks directly."""
    from dw_platform.lib.warehouse import PostgresWarehouse

    return PostgresWarehouse(
        host=os.environ["DW_PG_HOST"],
        port=int(os.environ["DW_PG_PORT"]),
        user=os.environ["DW_PG_USER"],
        password=os.environ["DW_PG_PASSWORD"],
        database=os.environ["DW_PG_DATABASE"],
    )


@pytest.fixture
def warehouse_resource(databases):
    """The warehouse resource on this test's warehouse."""
    return warehouse_from_env()


@pytest.fixture
def definitions(server) -> dg.Definitions:
    from dw_platform.definitions import defs

    return defs()


def run_job(definitions: dg.Definitions, first: date, last: date | None = None, **kwargs) -> dg.ExecuteInProcessResult:
    """Run the customer job for one day, or for first..last as one run (a single-run backfill)."""
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": (last or first).isoformat(),
    }
    return definitions.resolve_job_def("customer_daily").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=tags, raise_on_error=False, **kwargs
    )


@pytest.fixture
def storage(server, monkeypatch):
    """A fresh blob container on the session's Azurite, named in DW_SALES_CONTAINER for the code location."""
    container = f"sales-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("DW_SALES_CONTAINER", container)
    blobs = BlobStorage(container=container, connection_string=os.environ["DW_BLOB_CONNECTION_STRING"])
    blobs.ensure_container()
    yield blobs
    blobs.service_client().delete_container(container)


@pytest.fixture
def replication_source(server, databases, monkeypatch, tmp_path) -> Iterator[psycopg.Connection]:
    """A fresh database on the session's logical-decoding source server (see embedded.py), with
    its own slot and publication names and lakehouse folder, readable by the replication role as a
    DBA would set it up, wired into the environment; yields a superuser connection to it (the
    pipeline only reads it). Slots left in it are dropped with it."""
    from urllib.parse import urlsplit, urlunsplit

    name = f"app_{uuid.uuid4().hex[:8]}"
    with embedded.source_admin_connection("postgres") as conn:
        conn.execute(f'create database "{name}"')
    with embedded.source_admin_connection(name) as conn:
        embedded.grant_replication_reads(conn, f"dw_{name}")
    url = urlunsplit(urlsplit(server["DW_REPLICATION_SOURCE_URL"])._replace(path=f"/{name}"))
    monkeypatch.setenv("DW_REPLICATION_SOURCE_URL", url)
    monkeypatch.setenv("DW_REPLICATION_SLOT", f"dw_{name}")
    monkeypatch.setenv("DW_REPLICATION_PUBLICATION", f"dw_{name}")
    monkeypatch.setenv("DW_LAKEHOUSE_PATH", (tmp_path / "lakehouse").as_uri())
    with embedded.source_admin_connection(name) as conn:
        yield conn
    with embedded.source_admin_connection("postgres") as conn:
        conn.execute("select pg_terminate_backend(active_pid) from pg_replication_slots where database = %s", (name,))
        for _ in range(50):  # a terminated backend lets go of its slot a moment later
            try:
                conn.execute(
                    "select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = %s", (name,)
                )
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def defs(replication_source, warehouse) -> dg.Definitions:
    """The code location, loaded after the replication source and warehouse were set up."""
    from dw_platform.definitions import defs

    return defs()


@pytest.fixture
def lakehouse(replication_source, warehouse):
    """The test's lakehouse (the code location's settings), for reading tables."""
    from dw_platform.lib.lakehouse import lakehouse_from_env

    return lakehouse_from_env()


def load_all(defs: dg.Definitions, instance: dg.DagsterInstance, run_config=None) -> dg.ExecuteInProcessResult:
    """The replication discovery job, then the bulk load of every partition as one run."""
    discovered = defs.resolve_job_def("replication_discover").execute_in_process(instance=instance)
    assert discovered.success
    keys = instance.get_dynamic_partitions("replication_source_app_tables")
    return defs.resolve_job_def("replication_bulk_load_source_app").execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config=run_config or {},
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )


def equal_to_source(lakehouse, keys=None) -> dict[str, dict]:
    """Every completed table of source_app compared with its source table (rows and content hash)."""
    from dw_platform.replication.sources import load_sources
    from dw_platform.replication.status import ReplicationMeta
    from dw_platform.replication.validate import compare_table

    source = load_sources()["source_app"]
    statuses = ReplicationMeta(lakehouse, "source_app").statuses()
    return {
        k: compare_table(source, lakehouse, k, s)
        for k, s in statuses.items()
        if s["status"] == "completed" and (keys is None or k in keys)
    }


def all_equal(lakehouse) -> bool:
    compared = equal_to_source(lakehouse)
    assert compared and all(c["match"] for c in compared.values()), compared
    return True


def sources_file(tmp_path, monkeypatch, **settings) -> None:
    """Use the default sources.yaml with some settings replaced."""
    import re

    from dw_platform.replication.sources import DEFAULT_FILE

    text = DEFAULT_FILE.read_text()
    for name, value in settings.items():
        text = re.sub(rf"^(    {name}:).*$", rf"\g<1> {value}", text, flags=re.M)
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    monkeypatch.setenv("DW_REPLICATION_SOURCES", str(path))


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Materialization metadata by partition."""
    return {e.partition: e.materialization.metadata for e in result.get_asset_materialization_events()}


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


@pytest.fixture
def webhook():
    """A local HTTP server recording what is posted to it; yields (url, received bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"content_type": self.headers["Content-Type"], "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/alerts", received
    server.shutdown()
    server.server_close()


class DagsterDev(NamedTuple):
    client: "DagsterGraphQLClient"
    instance: dg.DagsterInstance
    url: str
    stack: "DevStack"


@pytest.fixture
def dagster_dev(databases, tmp_path, monkeypatch):
    """What `dw dev` runs (webserver, daemon, the supervised code server) on the session's
    services, this test's databases and a Dagster instance of its own (runs, sensor states), as a
    user runs it; yields a GraphQL client, the instance, the UI's address and the stack (its
    processes). Stopped afterwards."""
    import socket
    import time

    from dagster_graphql import DagsterGraphQLClient

    from dw_platform.devenv import supervisor

    instance_db = f"dg_{uuid.uuid4().hex[:8]}"
    with embedded.admin_connection("postgres") as conn:
        conn.execute(f'create database "{instance_db}" owner {embedded.PIPELINE_ROLE}')
    monkeypatch.setenv("DAGSTER_PG_URL", os.environ["DAGSTER_PG_URL"].replace("/dagster?", f"/{instance_db}?"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "dagster_dev.log"
    with open(log_path, "w") as log, supervisor.dagster_dev(port, embedded_postgres=True, output=log) as stack:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if stack.dagster_dev.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dagster dev did not start: {log_path.read_text()[-3000:]}") from None
                time.sleep(0.5)
        instance = dg.DagsterInstance.get()
        try:
            yield DagsterDev(client, instance, f"http://127.0.0.1:{port}", stack)
        finally:
            instance.dispose()
    with embedded.admin_connection("postgres") as conn:
        conn.execute(f'drop database if exists "{instance_db}" with (force)')


@pytest.fixture
def softcart_db(server, monkeypatch):
    """A fresh database with SoftCart's source tables on the session's MariaDB, named in
    DW_SOFTCART_ODBC for the code location; yields an autocommit pyodbc connection to it."""
    import pyodbc

    from dw_platform.samples.softcart import create_source_tables

    mariadb = embedded.running_mariadb(embedded.state_dir() / "mariadb")
    name = f"softcart_{uuid.uuid4().hex[:8]}"
    mariadb.create_database(name)
    monkeypatch.setenv("DW_SOFTCART_ODBC", mariadb.odbc_connection_string(name))
    conn = pyodbc.connect(os.environ["DW_SOFTCART_ODBC"], autocommit=True)
    create_source_tables(conn)
    yield conn
    conn.close()
    mariadb.drop_database(name)


@pytest.fixture
def weblogs(server, monkeypatch):
    """A fresh blob container on the session's Azurite as the weblogs landing zone; yields its Landing."""
    from dw_platform.defs.softcart.resources import weblogs_landing_zone

    container = f"weblogs-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("DW_SOFTCART_WEBLOGS_CONTAINER", container)
    zone = weblogs_landing_zone().process_config_and_initialize().landing()
    zone.storage.ensure_container()
    yield zone
    zone.storage.service_client().delete_container(container)


class Emulator:
    """An Azurite blob service owned by one test (to stop or kill by its pid), on a fixed port
    across restarts."""

    def __init__(self, location: Path):
        self.location = location
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self) -> None:
        self.process, self.port = embedded.start_azurite(self.location, port=self.port)

    def stop(self) -> None:
        """Stop the emulator by its pid, gracefully (SIGTERM): it saves its state first."""
        embedded.stop_process(self.process)

    def settle(self) -> None:
        """Make what was uploaded so far survive a crash: Azurite saves its blob index only every
        5 s or on a graceful stop (a real storage account has it durable on upload already)."""
        self.stop()
        self.start()

    def crash(self) -> None:
        """Kill the emulator by its pid (SIGKILL): storage is gone at once, mid-request."""
        self.process.kill()
        self.process.wait()

    def settings(self) -> dict:
        """Storage settings for this emulator, with the SDK's retries cut to one (after 3 s) so an
        outage outlasts them in seconds rather than a minute, and small chunks so a file is read in
        many requests."""
        return {
            "connection_string": azurite_connection_string(self.port),
            "retries": 1,
            "retry_backoff_s": 0,
            "max_chunk_bytes": 64 * 1024,
        }

    def storage(self, container: str) -> BlobStorage:
        storage = BlobStorage(container=container, **self.settings())
        storage.ensure_container()
        return storage


@pytest.fixture
def azurite(server, tmp_path) -> Iterator[Emulator]:
    """An Azurite of the test's own, for faults the session's shared one must not suffer."""
    emulator = Emulator(tmp_path / "azurite")
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def instance(server) -> Iterator[dg.DagsterInstance]:
    """The session's Dagster instance (dagster.yaml: PostgreSQL, as in production): a child
    process running a job sees the same runs."""
    with dg.DagsterInstance.get() as instance:
        yield instance
