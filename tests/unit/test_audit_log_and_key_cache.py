"""The audit log's bounded queue and the authorization service's key cache, with fake stores and clocks."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth.key_cache import CachedKeyDirectory
from services.shared.audit_log import AuditLog
from services.store.errors import StoreUnavailable
from services.store.records import AuditRecord, KeyRecord


def audit_record(at: float) -> AuditRecord:
    return AuditRecord(at, "key:k", "rest", "POST /v1/generate", "m", "NORMAL", "ok", 200, "", 1, 1, 1.0, "")


class AuditStore:
    def __init__(self) -> None:
        self.batches: list[list[AuditRecord]] = []
        self.down = False

    async def append(self, records) -> None:
        if self.down:
            raise StoreUnavailable("down")
        self.batches.append(list(records))


async def test_records_past_the_bound_are_dropped_never_the_caller_blocked() -> None:
    store = AuditStore()
    store.down = True
    audit = AuditLog(store, max_batch=10, max_pending=25)
    for n in range(40):
        audit.record(audit_record(n))
    store.down = False
    await audit.close()
    written = [record.at for batch in store.batches for record in batch]
    assert written == list(range(25)), "the oldest kept, in order; the 15 past the bound dropped"
    assert max(len(batch) for batch in store.batches) == 10


async def test_a_full_batch_is_written_without_waiting_for_the_timer() -> None:
    store = AuditStore()
    audit = AuditLog(store, max_batch=5, flush_every_seconds=3600)
    audit.start()
    for n in range(5):
        audit.record(audit_record(n))
    for _ in range(100):
        if store.batches:
            break
        await asyncio.sleep(0.01)
    assert [len(batch) for batch in store.batches] == [5]
    await audit.close()


def key(key_id: str, revoked_at: float | None = None) -> KeyRecord:
    return KeyRecord(key_id, "k", "0" * 64, ("inference",), "NORMAL", None, None, None, 0.0, None, revoked_at, 0.0)


class KeyStore:
    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.reads = 0
        self.down = False
        self.gate: asyncio.Event | None = None

    async def get(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise StoreUnavailable("down")
        return self.records.get(key_id)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_record_is_reread_after_half_a_second_so_revocation_shows() -> None:
    store, clock = KeyStore(), Clock()
    store.records["k1"] = key("k1")
    cache = CachedKeyDirectory(store, fresh_for=0.5, clock=clock)  # type: ignore[arg-type]
    assert (await cache.find("k1")).revoked_at is None
    store.records["k1"] = key("k1", revoked_at=1.0)
    clock.now = 0.4
    assert (await cache.find("k1")).revoked_at is None and store.reads == 1
    clock.now = 0.6
    assert (await cache.find("k1")).revoked_at == 1.0 and store.reads == 2


async def test_unknown_keys_are_remembered_too_and_the_cache_is_bounded() -> None:
    store, clock = KeyStore(), Clock()
    cache = CachedKeyDirectory(store, max_entries=3, clock=clock)  # type: ignore[arg-type]
    for _ in range(5):
        assert await cache.find("nope") is None
    assert store.reads == 1
    for n in range(10):
        await cache.find(f"other{n}")
    await cache.find("nope")
    assert store.reads == 12, "evicted, so read again"


async def test_concurrent_lookups_of_one_key_share_one_read() -> None:
    store, clock = KeyStore(), Clock()
    store.records["k1"] = key("k1")
    store.gate = asyncio.Event()
    cache = CachedKeyDirectory(store, clock=clock)  # type: ignore[arg-type]
    lookups = [asyncio.create_task(cache.find("k1")) for _ in range(20)]
    await asyncio.sleep(0)
    store.gate.set()
    assert all(found.key_id == "k1" for found in await asyncio.gather(*lookups))
    assert store.reads == 1


async def test_while_the_store_is_down_a_known_key_is_used_until_it_is_too_stale() -> None:
    store, clock = KeyStore(), Clock()
    store.records["k1"] = key("k1")
    cache = CachedKeyDirectory(store, fresh_for=0.5, stale_for=60, clock=clock)  # type: ignore[arg-type]
    await cache.find("k1")
    store.down = True
    clock.now = 30
    assert (await cache.find("k1")).key_id == "k1"
    clock.now = 61
    with pytest.raises(StoreUnavailable):
        await cache.find("k1")


async def test_a_recheck_reads_again_but_not_more_often_than_every_fifty_milliseconds() -> None:
    store, clock = KeyStore(), Clock()
    store.records["k1"] = key("k1")
    cache = CachedKeyDirectory(store, clock=clock)  # type: ignore[arg-type]
    await cache.find("k1")
    await cache.find("k1", recheck=True)
    assert store.reads == 1, "read a moment ago"
    clock.now = 0.06
    await cache.find("k1", recheck=True)
    assert store.reads == 2
