"""Fixtures of the fault tests (the session's servers and fixtures come from tests/conftest.py)."""

from collections.abc import Iterator

import dagster as dg
import pytest

from faults.injection import Emulator


@pytest.fixture
def azurite(server, tmp_path) -> Iterator[Emulator]:
    emulator = Emulator(tmp_path / "azurite")
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def instance(server) -> Iterator[dg.DagsterInstance]:
    """The session's Dagster instance (PostgreSQL, like production): a child process sees its runs."""
    with dg.DagsterInstance.get() as instance:
        yield instance
