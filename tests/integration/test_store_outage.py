"""What the mesh does while its database is down, on a real PostgreSQL server stopped mid-test.

Keys read before the outage keep working (nothing can be revoked meanwhile: revoking writes to the same
database); a key never read is refused 503; audit records wait in memory and are written once it is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.auth.app import prune_audit
from gateway.auth.core.authorizer import AccessRequest, Authorizer
from gateway.auth.core.tokens import TokenPolicy
from gateway.auth.key_cache import CachedKeyDirectory
from services.identity.key_admin import KeyTerms, issue_key, revoke_key
from services.shared.audit_log import AuditLog
from services.shared.errors import ErrorKind, MeshError
from services.shared.identity import Scope
from services.store.database import Database, Timeouts, open_database
from services.store.errors import StoreUnavailable
from services.store.records import AuditRecord
from tests.postgres import PostgresServer

FAST = Timeouts(connect_s=1.0, command_s=2.0, pool_s=1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    # Its own server: this test stops it.
    with PostgresServer() as own:
        yield own


@pytest.fixture
async def database(server: PostgresServer) -> AsyncIterator[Database]:
    opened = await open_database(server.url(), timeouts=FAST)
    try:
        yield opened
    finally:
        await opened.close()


def record(at: float) -> AuditRecord:
    return AuditRecord(at, "key:k1", "rest", "POST /v1/generate", "m", "NORMAL", "ok", 200, "", 2, 3, 10.0, "t")


async def test_keys_read_before_an_outage_work_through_it_and_unknown_ones_get_503(
    server: PostgresServer, database: Database
) -> None:
    known = await issue_key(database.keys, KeyTerms("known", (Scope.INFERENCE,)))
    never_read = await issue_key(database.keys, KeyTerms("never read", (Scope.INFERENCE,)))
    clock = Clock()
    authorizer = Authorizer(CachedKeyDirectory(database.keys, fresh_for=0.5, stale_for=300, clock=clock), TokenPolicy())

    def asking(key: str) -> AccessRequest:
        return AccessRequest("POST", "/v1/generate", "", {"authorization": f"Bearer {key}"})

    assert (await authorizer.check(asking(known.key))).subject == f"key:{known.record.key_id}"
    server.stop()
    clock.now += 10  # past the half second a record is fresh for: it must be read again, and cannot be
    assert (await authorizer.check(asking(known.key))).subject == f"key:{known.record.key_id}"
    started = time.monotonic()
    with pytest.raises(MeshError) as refused:
        await authorizer.check(asking(never_read.key))
    assert (refused.value.kind, refused.value.reason) == (ErrorKind.UNAVAILABLE, "CREDENTIAL_STORE_UNAVAILABLE")
    assert time.monotonic() - started < 10, "refused within the connect timeout, not hung"
    with pytest.raises(StoreUnavailable):
        await revoke_key(database.keys, known.record.key_id)
    clock.now += 400  # past the stale limit, a known key is refused too
    with pytest.raises(MeshError):
        await authorizer.check(asking(known.key))


async def test_audit_records_wait_out_an_outage_and_are_all_written_after_it(
    server: PostgresServer, database: Database
) -> None:
    audit = AuditLog(database.audit, flush_every_seconds=0.05)
    audit.start()
    server.stop()
    for n in range(3):
        audit.record(record(1000.0 + n))
    server.resume()
    deadline = time.monotonic() + 30
    while len(await _written(database)) < 3 and time.monotonic() < deadline:
        await _pause()
    await audit.close()
    assert [r.at for r in await _written(database)] == [1000.0, 1001.0, 1002.0]


async def test_a_clean_close_writes_everything_queued(database: Database) -> None:
    audit = AuditLog(database.audit, flush_every_seconds=3600)
    audit.start()
    for n in range(1200):
        audit.record(record(float(n)))
    await audit.close()
    assert len(await database.audit.query(0, limit=5000)) == 1200


async def _written(database: Database) -> list[AuditRecord]:
    try:
        return await database.audit.query(0)
    except StoreUnavailable:
        return []


async def _pause() -> None:
    await asyncio.sleep(0.05)


async def test_audit_records_past_the_retention_are_pruned(database: Database) -> None:
    day = 86400.0
    await database.audit.append([record(1000 * day), record(1089 * day), record(1091 * day)])
    assert await prune_audit(database, retention_days=90, now=1180 * day) == 2
    assert [r.at for r in await database.audit.query(0)] == [1091 * day]
