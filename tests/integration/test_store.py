"""The store on both of its backends: SQLite in a file and a real PostgreSQL server, a fresh database each test."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from services.store import (
    AuditRecord,
    Database,
    KeyRecord,
    StoreUnavailable,
    Timeouts,
    normalize_url,
    open_database,
    sqlite_url,
)
from services.store.migrate import head_revision
from services.store.schema import metadata
from tests.ports import free_port
from tests.postgres import PostgresServer

# A guard against a hang, not a measure: the store gives up within its own timeouts, far inside this.
HANG_GUARD_S = 30.0
# Short waits, for the tests where the wait is meant to run out.
IMPATIENT_CONNECT = Timeouts(connect_s=0.5)
IMPATIENT_SQLITE_WRITER = Timeouts(sqlite_busy_s=0.2)


def key(key_id: str = "k7f3a9c2e1b04d", **changes: Any) -> KeyRecord:
    record = KeyRecord(
        key_id=key_id,
        name=f"{key_id} of the docs team",
        secret_hash="a" * 64,
        scopes=("inference", "jobs"),
        max_priority="HIGH",
        requests_per_minute=600,
        tokens_per_minute=None,
        max_concurrent=4,
        created_at=1_700_000_000.25,
        expires_at=1_800_000_000.5,
        revoked_at=None,
        updated_at=1_700_000_000.25,
    )
    return dataclasses.replace(record, **changes)


def audit(at: float, subject: str = "key:k1", **changes: Any) -> AuditRecord:
    record = AuditRecord(
        at=at,
        subject=subject,
        surface="openai",
        route="POST /v1/chat/completions",
        model="gemma-3-270m",
        priority="NORMAL",
        outcome="ok",
        status=200,
        reason="",
        input_tokens=12,
        output_tokens=34,
        latency_ms=56.75,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )
    return dataclasses.replace(record, **changes)


async def inspect(url: str, look: Callable[[Connection], Any]) -> Any:
    """Runs `look` on a connection of the test's own, outside the store."""
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(look)
    finally:
        await engine.dispose()


def revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


# Keys.


async def test_a_key_reads_back_as_it_was_added(database: Database) -> None:
    rotated = key(previous_secret_hash="b" * 64, previous_valid_until=1_700_000_100.0)
    await database.keys.add(key("k1"))
    await database.keys.add(dataclasses.replace(rotated, key_id="k2", scopes=()))
    assert await database.keys.get("k1") == key("k1")
    assert await database.keys.get("k2") == dataclasses.replace(rotated, key_id="k2", scopes=())
    assert await database.keys.get("k-unknown") is None


async def test_adding_a_taken_key_id_fails_and_keeps_the_first(database: Database) -> None:
    await database.keys.add(key("k1"))
    with pytest.raises(ValueError, match="exists already"):
        await database.keys.add(key("k1", name="impostor"))
    assert await database.keys.get("k1") == key("k1")


async def test_a_scope_with_a_space_is_refused(database: Database) -> None:
    with pytest.raises(ValueError, match="one word"):
        await database.keys.add(key("k1", scopes=("inference jobs",)))
    assert await database.keys.get("k1") is None


async def test_list_orders_by_creation_and_leaves_out_revoked_keys(database: Database) -> None:
    for key_id, created_at in (("k-late", 30.0), ("k-early", 10.0), ("k-middle", 20.0)):
        await database.keys.add(key(key_id, created_at=created_at, updated_at=created_at))
    assert await database.keys.revoke("k-middle", at=40.0)
    assert [record.key_id for record in await database.keys.list()] == ["k-early", "k-late"]
    listed = await database.keys.list(include_revoked=True)
    assert [record.key_id for record in listed] == ["k-early", "k-middle", "k-late"]


async def test_revoke_happens_once_and_its_first_time_stands(database: Database) -> None:
    await database.keys.add(key("k1"))
    assert await database.keys.revoke("k1", at=1_700_000_500.0) is True
    assert await database.keys.revoke("k1", at=1_700_000_900.0) is False
    assert await database.keys.revoke("k-unknown", at=1_700_000_900.0) is False
    revoked = await database.keys.get("k1")
    assert revoked == key("k1", revoked_at=1_700_000_500.0, updated_at=1_700_000_500.0)


async def test_rotate_with_a_grace_period_keeps_the_old_secret_until_it_ends(database: Database) -> None:
    await database.keys.add(key("k1", secret_hash="old"))
    assert await database.keys.rotate("k1", "new", previous_valid_until=1_700_003_600.0, at=1_700_000_600.0)
    rotated = await database.keys.get("k1")
    assert rotated == key(
        "k1",
        secret_hash="new",
        previous_secret_hash="old",
        previous_valid_until=1_700_003_600.0,
        updated_at=1_700_000_600.0,
    )


async def test_rotate_without_grace_drops_every_earlier_secret(database: Database) -> None:
    await database.keys.add(key("k1", secret_hash="first"))
    assert await database.keys.rotate("k1", "second", previous_valid_until=1_700_003_600.0, at=1_700_000_600.0)
    assert await database.keys.rotate("k1", "third", previous_valid_until=None, at=1_700_000_700.0)
    rotated = await database.keys.get("k1")
    assert rotated == key("k1", secret_hash="third", updated_at=1_700_000_700.0)


async def test_a_revoked_or_unknown_key_cannot_be_rotated(database: Database) -> None:
    await database.keys.add(key("k1", secret_hash="old"))
    await database.keys.revoke("k1", at=1_700_000_500.0)
    assert await database.keys.rotate("k1", "new", previous_valid_until=None, at=1_700_000_600.0) is False
    assert await database.keys.rotate("k-unknown", "new", previous_valid_until=None, at=1_700_000_600.0) is False
    assert (await database.keys.get("k1")).secret_hash == "old"


# Audit.


async def test_audit_records_read_back_oldest_first(database: Database) -> None:
    appended = [audit(30.0), audit(10.0, outcome="denied", status=401, reason="KEY_REVOKED"), audit(20.0)]
    await database.audit.append(appended)
    assert await database.audit.query(since=0.0) == sorted(appended, key=lambda record: record.at)


async def test_audit_records_of_one_instant_keep_the_order_they_came_in(database: Database) -> None:
    same_instant = [audit(10.0, trace_id=f"trace-{index}") for index in range(5)]
    await database.audit.append(same_instant[:2])
    await database.audit.append(same_instant[2:])
    assert await database.audit.query(since=0.0) == same_instant


async def test_audit_query_filters_by_time_and_subject_and_stops_at_the_limit(database: Database) -> None:
    anonymous = audit(15.0, subject="", outcome="denied", status=401, reason="NO_CREDENTIAL")
    records = [audit(10.0), anonymous, audit(20.0, subject="jwt:https://idp#ann"), audit(30.0), audit(40.0)]
    await database.audit.append(records)
    assert [record.at for record in await database.audit.query(since=20.0)] == [20.0, 30.0, 40.0]
    assert [record.at for record in await database.audit.query(since=0.0, subject="key:k1")] == [10.0, 30.0, 40.0]
    assert await database.audit.query(since=0.0, subject="") == [anonymous]
    assert [record.at for record in await database.audit.query(since=15.0, subject="key:k1", limit=1)] == [30.0]
    assert [record.at for record in await database.audit.query(since=0.0, limit=2)] == [10.0, 15.0]
    with pytest.raises(ValueError, match="limit"):
        await database.audit.query(since=0.0, limit=0)


async def test_appending_nothing_writes_nothing(database: Database) -> None:
    await database.audit.append([])
    assert await database.audit.query(since=0.0) == []


async def test_delete_before_counts_what_it_deleted(database: Database) -> None:
    await database.audit.append([audit(at) for at in (10.0, 20.0, 20.0, 30.0)])
    assert await database.audit.delete_before(20.0) == 1
    assert await database.audit.delete_before(30.0) == 2
    assert await database.audit.delete_before(30.0) == 0
    assert [record.at for record in await database.audit.query(since=0.0)] == [30.0]


# The database as a whole.


async def test_ping_answers_and_the_url_hides_the_password(database: Database, database_url: str) -> None:
    await database.ping()
    assert database.url == normalize_url(database_url)
    assert "***" not in database.url


async def test_migrations_leave_the_schema_at_head_and_as_schema_py_says(database: Database, database_url: str) -> None:
    def differences(connection: Connection) -> list[Any]:
        return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)

    assert await inspect(database_url, revision) == head_revision() is not None
    assert await inspect(database_url, differences) == []


async def test_opening_again_migrates_nothing_and_keeps_the_data(database: Database, database_url: str) -> None:
    await database.keys.add(key("k1"))
    await database.audit.append([audit(10.0)])
    async with await open_database(database_url) as again:
        assert await again.keys.get("k1") == key("k1")
        assert await again.audit.query(since=0.0) == [audit(10.0)]
    assert await inspect(database_url, revision) == head_revision()


async def test_concurrent_opens_of_a_fresh_database_all_succeed(database_url: str) -> None:
    # A task group, not gather: should one open fail, the others are cancelled rather than left to migrate
    # in the background of the tests that follow.
    async with asyncio.TaskGroup() as opening:
        tasks = [opening.create_task(open_database(database_url)) for _ in range(3)]
    opened = [task.result() for task in tasks]
    try:
        await opened[0].keys.add(key("k1"))
        for each in opened:
            assert await each.keys.get("k1") == key("k1")
    finally:
        for each in opened:
            await each.close()
    versions = await inspect(database_url, lambda c: c.execute(text("SELECT version_num FROM alembic_version")).all())
    assert [row[0] for row in versions] == [head_revision()]


# SQLite.


async def test_sqlite_makes_its_directory_and_a_private_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "store.db"
    async with await open_database(f"sqlite:///{path}") as database:
        await database.keys.add(key("k1"))
        for file in (path, path.with_name("store.db-wal")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_fresh_sqlite_files_opened_four_at_a_time_are_never_refused(tmp_path: Path) -> None:
    # Switching a fresh file to WAL while another connection is mid-transaction was refused at once
    # ("database is locked"), busy_timeout or not: a few rounds of racing opens showed it.
    for round_ in range(50):
        url = sqlite_url(tmp_path / str(round_) / "store.db")
        async with asyncio.TaskGroup() as opening:
            tasks = [opening.create_task(open_database(url)) for _ in range(4)]
        for task in tasks:
            await task.result().close()


async def test_sqlite_reads_go_on_while_a_writer_holds_the_lock_and_writes_give_up(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await open_database(sqlite_url(path), timeouts=IMPATIENT_SQLITE_WRITER) as database:
        await database.keys.add(key("k1"))
        other_writer = sqlite3.connect(path, isolation_level=None)
        try:
            other_writer.execute("BEGIN IMMEDIATE")
            assert await database.keys.get("k1") == key("k1")
            with pytest.raises(StoreUnavailable, match="locked"):
                await asyncio.wait_for(database.keys.add(key("k2")), HANG_GUARD_S)
        finally:
            other_writer.close()
        await database.keys.add(key("k2"))
        assert await database.keys.get("k2") == key("k2")


async def test_a_sqlite_file_that_cannot_be_made_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state directory should be")
    with pytest.raises(StoreUnavailable, match="store.db"):
        await open_database(sqlite_url(tmp_path / "state" / "store.db"))


# PostgreSQL out of reach.


async def test_nothing_listening_makes_open_raise_store_unavailable_naming_the_masked_url() -> None:
    url = f"postgresql://meshserve:hunter2@127.0.0.1:{free_port()}/mesh"
    with pytest.raises(StoreUnavailable) as raised:
        await asyncio.wait_for(open_database(url), HANG_GUARD_S)
    assert "meshserve:***@127.0.0.1" in str(raised.value)
    assert "hunter2" not in str(raised.value)


async def test_a_database_the_server_does_not_have_is_store_unavailable(postgres_server: PostgresServer) -> None:
    with pytest.raises(StoreUnavailable, match="no_such_database"):
        await asyncio.wait_for(open_database(postgres_server.url("no_such_database")), HANG_GUARD_S)


async def test_a_server_that_never_answers_times_out_into_store_unavailable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        # Listening but never accepting: the kernel completes the handshake, and nothing ever replies.
        silent.bind(("127.0.0.1", free_port()))
        silent.listen(8)
        url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/mesh"
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(open_database(url, timeouts=IMPATIENT_CONNECT), HANG_GUARD_S)


async def test_a_stopped_server_makes_every_call_raise_store_unavailable(own_postgres: PostgresServer) -> None:
    async with await open_database(own_postgres.create_database()) as database:
        await database.keys.add(key("k1"))
        own_postgres.stop()
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: database.ping(),
            lambda: database.keys.get("k1"),
            lambda: database.keys.add(key("k2")),
            lambda: database.keys.list(),
            lambda: database.keys.revoke("k1", at=1.0),
            lambda: database.keys.rotate("k1", "new", None, at=1.0),
            lambda: database.audit.append([audit(1.0)]),
            lambda: database.audit.query(since=0.0),
            lambda: database.audit.delete_before(1.0),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(call(), HANG_GUARD_S)
