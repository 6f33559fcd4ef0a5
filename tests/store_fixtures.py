"""The store's fixtures: a fresh database on each backend (SQLite in a file, a real PostgreSQL), and a
PostgreSQL server of a test's own for the tests that stop it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.store.database import Database, open_database
from services.store.urls import sqlite_url
from tests.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "state" / "store.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture()
async def database(database_url: str) -> AsyncIterator[Database]:
    opened = await open_database(database_url)
    yield opened
    await opened.close()


@pytest.fixture()
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, for a test that stops it."""
    with PostgresServer() as server:
        yield server
