"""Brings a database's schema to head with alembic, from code: no alembic.ini at run time.

Two processes may open one fresh database at once. Each runs its upgrade inside one transaction that first
takes a lock, and alembic reads the current revision only after that, so the second finds the first's work
done. PostgreSQL: a transaction-scoped advisory lock (its DDL is transactional, so a failed upgrade leaves
nothing behind). SQLite: BEGIN IMMEDIATE, the database's write lock, waited for up to busy_timeout.

A new migration: `python -c 'from alembic import command; from services.store.migrate import alembic_config;
command.revision(alembic_config(), message="what it adds")'`, then write its upgrade by hand (a migration is
frozen, so it does not import schema.py); test_store.py checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.store.connections import Connections

MIGRATIONS = Path(__file__).parent / "migrations"
# Any number every meshserve process agrees on: "mesh" in ASCII.
_ADVISORY_LOCK_KEY = 0x6D657368


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # The Config is an ini file underneath: a % in the path would read as interpolation.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade_to_head(connections: Connections) -> None:
    async with connections.transaction(write_lock=True) as connection:
        if connections.dialect == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
