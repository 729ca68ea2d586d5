"""The embedded default's MariaDB for the SoftCart source: started under the state folder, reused
by a second `dw` process, a dead server's endpoint pruned, stopped on exit; none when configured."""

import json
import os
import subprocess
import sys

import pyodbc
import pytest

from dw_platform.devenv import embedded


@pytest.fixture
def no_mariadb_settings(monkeypatch, tmp_path):
    monkeypatch.delenv("DW_SOFTCART_ODBC", raising=False)
    monkeypatch.setenv("DW_HOME", str(tmp_path))
    monkeypatch.setenv("DW_PG_HOST", "/configured/elsewhere")  # PostgreSQL and blob storage are not the point
    monkeypatch.setenv("DW_BLOB_CONNECTION_STRING", "BlobEndpoint=https://example.invalid/;")
    return tmp_path


SECOND_PROCESS = """
import os
from dw_platform.devenv import embedded
with embedded.services(env_file=None):
    print(os.environ["DW_SOFTCART_ODBC"])
"""


def test_without_settings_mariadb_runs_under_the_state_folder_is_reused_and_stops_on_exit(no_mariadb_settings):
    with embedded.services(env_file=None):
        connection = os.environ["DW_SOFTCART_ODBC"]
        assert "Database=softcart" in connection and str(no_mariadb_settings) in connection
        with pyodbc.connect(connection, autocommit=True) as conn:
            conn.cursor().execute("create table t (id int)")
        endpoint = json.loads((no_mariadb_settings / "mariadb" / "endpoint.json").read_text())

        # A second `dw` process uses the running server (same socket, same data) and leaves it running.
        second = subprocess.run(
            [sys.executable, "-c", SECOND_PROCESS],
            capture_output=True,
            text=True,
            env=dict(os.environ, DW_SOFTCART_ODBC=""),
            check=True,
        )
        assert second.stdout.strip() == connection
        with pyodbc.connect(connection, autocommit=True) as conn:
            assert conn.cursor().execute("select count(*) from t").fetchval() == 0

    assert "DW_SOFTCART_ODBC" not in os.environ
    assert not (no_mariadb_settings / "mariadb" / "endpoint.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(endpoint["pid"], 0)


def test_an_endpoint_left_by_a_dead_server_is_pruned_not_trusted(no_mariadb_settings):
    location = no_mariadb_settings / "mariadb"
    location.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (location / "endpoint.json").write_text(json.dumps({"pid": dead.pid, "port": 1}))
    (location / "endpoint.json").chmod(0o600)

    assert embedded.running_mariadb(location) is None
    assert not (location / "endpoint.json").exists()

    with embedded.services(env_file=None):
        with pyodbc.connect(os.environ["DW_SOFTCART_ODBC"], autocommit=True) as conn:
            assert conn.cursor().execute("select database()").fetchval() == "softcart"


def test_a_configured_source_starts_no_server(no_mariadb_settings, monkeypatch):
    monkeypatch.setenv("DW_SOFTCART_ODBC", "Driver={MariaDB Unicode};Server=shop.example.internal;Database=softcart")
    with embedded.services(env_file=None):
        assert os.environ["DW_SOFTCART_ODBC"].endswith("Server=shop.example.internal;Database=softcart")
    assert not (no_mariadb_settings / "mariadb").exists()
