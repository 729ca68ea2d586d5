"""The embedded default's blob side: Azurite as a child process, and the development Fernet key."""

import os
import socket

import pytest
from cryptography.fernet import Fernet

from dw_platform.devenv import embedded
from dw_platform.lib.blob import BlobStorage


@pytest.fixture
def no_blob_settings(monkeypatch, tmp_path):
    for key in ("DW_BLOB_CONNECTION_STRING", "DW_BLOB_ACCOUNT_URL", "DW_SALES_FERNET_KEYS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DW_HOME", str(tmp_path))
    monkeypatch.setenv("DW_PG_HOST", "/configured/elsewhere")  # PostgreSQL is not the point here
    monkeypatch.setenv("DW_SOFTCART_ODBC", "Driver={MariaDB Unicode};Server=elsewhere")  # nor MariaDB
    return tmp_path


def port_of(connection_string: str) -> int:
    return int(connection_string.split("BlobEndpoint=http://127.0.0.1:")[1].split("/")[0])


def test_without_blob_settings_azurite_runs_on_loopback_under_the_state_folder_until_exit(no_blob_settings):
    with embedded.services(env_file=None):
        connection = os.environ["DW_BLOB_CONNECTION_STRING"]
        port = port_of(connection)
        storage = BlobStorage(container="probe", connection_string=connection)
        storage.ensure_container()
        assert storage.upload("incoming/x.csv", b"a\n").etag
        assert (no_blob_settings / "azurite" / "endpoint.json").exists()
        assert any((no_blob_settings / "azurite").glob("__azurite_db_blob*"))

    assert "DW_BLOB_CONNECTION_STRING" not in os.environ
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_configured_blob_storage_starts_no_emulator(no_blob_settings, monkeypatch):
    monkeypatch.setenv("DW_BLOB_CONNECTION_STRING", "BlobEndpoint=https://example.invalid/;")
    with embedded.services(env_file=None):
        assert os.environ["DW_BLOB_CONNECTION_STRING"] == "BlobEndpoint=https://example.invalid/;"
    assert not (no_blob_settings / "azurite").exists()


def test_the_development_fernet_key_is_generated_once_and_kept_private(no_blob_settings):
    embedded._dev_fernet_keys(no_blob_settings)
    first = os.environ.pop("DW_SALES_FERNET_KEYS")
    embedded._dev_fernet_keys(no_blob_settings)

    assert os.environ["DW_SALES_FERNET_KEYS"] == first
    Fernet(first)  # a valid key
    assert (no_blob_settings / "sales_fernet_keys").stat().st_mode & 0o077 == 0
