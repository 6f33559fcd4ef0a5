"""The SQLAlchemy engine for each backend, with the settings that keep a slow or absent database from hanging us."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.store.urls import is_sqlite, sqlite_file

# An execution option: a transaction opened with it takes SQLite's write lock at BEGIN, so two writers queue
# on busy_timeout instead of one failing when it upgrades a read lock (the migration relies on it).
SQLITE_WRITE_LOCK = "meshserve_sqlite_write_lock"
# A small pool: the store serves key look-ups and batched audit writes, not heavy traffic.
_POSTGRES_POOL_SIZE = 5
_POSTGRES_POOL_OVERFLOW = 5


@dataclass(frozen=True)
class Timeouts:
    """How long the store waits before it calls the database unavailable."""

    connect_s: float = 3.0  # PostgreSQL: opening a connection
    command_s: float = 10.0  # PostgreSQL: one statement, lock waits included
    pool_s: float = 5.0  # waiting for a free pooled connection
    sqlite_busy_s: float = 5.0  # SQLite: waiting for another writer's lock


def build_engine(url: str, timeouts: Timeouts) -> AsyncEngine:
    """An engine for a normalized URL (see urls.normalize_url)."""
    if is_sqlite(url):
        return _sqlite_engine(url, timeouts)
    return create_async_engine(
        url,
        pool_size=_POSTGRES_POOL_SIZE,
        max_overflow=_POSTGRES_POOL_OVERFLOW,
        pool_timeout=timeouts.pool_s,
        # A pooled connection may have outlived a server restart: test it before use, reconnect if it died.
        pool_pre_ping=True,
        connect_args={"timeout": timeouts.connect_s, "command_timeout": timeouts.command_s},
    )


def _sqlite_engine(url: str, timeouts: Timeouts) -> AsyncEngine:
    path = sqlite_file(url)
    if path is not None:
        _prepare_file(path, timeouts.sqlite_busy_s)
    engine = create_async_engine(url, pool_timeout=timeouts.pool_s)
    pragmas = (
        f"PRAGMA busy_timeout = {int(timeouts.sqlite_busy_s * 1000)}",
        # NORMAL is durable enough under WAL, which the file is in (see _prepare_file).
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 module's own transaction handling starts no transaction before a SELECT or DDL; with
        # it off, _begin below starts every transaction, so reads and migrations are transactional too.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        takes_write_lock = connection.get_execution_options().get(SQLITE_WRITE_LOCK, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if takes_write_lock else "BEGIN")

    return engine


def _prepare_file(path: Path, busy_s: float) -> None:
    """Makes the database file private and puts it in WAL mode, where readers never block the writer.

    The database holds key hashes and the audit log: only its owner reads it (SQLite gives its -wal and -shm
    files the database file's mode). WAL mode is a property of the file, so it is set once here rather than
    on every connection: a connection that switches modes needs the exclusive lock, and SQLite refuses it at
    once, without waiting out busy_timeout, while another connection of a fresh database is mid-transaction.
    The flock keeps meshserve processes opening one fresh file from switching it at the same moment; it is a
    different lock from SQLite's own fcntl locks, so it never blocks a connection's reads or writes.

    OSError if the file or its directory cannot be made; sqlite3.Error if the mode cannot be set.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        connection = sqlite3.connect(path, timeout=busy_s)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
        finally:
            connection.close()
    finally:
        os.close(descriptor)  # also releases the flock
