"""The job store on both of its backends: SQLite in a file and a real PostgreSQL server, a fresh database each test.

Time is the `now` each call is given: no test waits for a clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect as inspect_schema
from sqlalchemy.engine import Connection

from services.store import (
    BatchRecord,
    Database,
    FileRecord,
    IdempotencyConflict,
    JobRecord,
    JobState,
    StoreUnavailable,
    Timeouts,
    normalize_url,
    open_database,
)
from services.store.connections import Connections
from services.store.engine import build_engine
from services.store.keys import KeyStore
from services.store.migrate import alembic_config, head_revision
from services.store.urls import mask_url
from tests.integration.test_store import inspect, key, revision
from tests.postgres import PostgresServer

HANG_GUARD_S = 30.0
T = 1_700_000_000.0
LEASE_S = 30.0


def job(job_id: str, owner: str = "key:k1", **changes: Any) -> JobRecord:
    record = JobRecord(
        job_id=job_id,
        owner=owner,
        priority=2,
        request='{"model": "gemma-3-270m", "prompt": "hello"}',
        request_hash="h-hello",
        identity='{"sub": "key:k1"}',
        created_at=T,
        updated_at=T,
    )
    return dataclasses.replace(record, **changes)


def claimed(record: JobRecord, worker: str, now: float, attempts: int = 1) -> JobRecord:
    """`record` as a claim by `worker` at `now` leaves it."""
    return dataclasses.replace(
        record,
        state=JobState.RUNNING,
        lease_owner=worker,
        lease_until=now + LEASE_S,
        attempts=attempts,
        started_at=now,
        updated_at=now,
    )


async def submit_all(database: Database, *records: JobRecord) -> None:
    for record in records:
        assert await database.jobs.submit(record) == (record, True)


def batch(batch_id: str, lines: list[JobRecord], owner: str = "key:k1", **changes: Any) -> BatchRecord:
    record = BatchRecord(batch_id=batch_id, owner=owner, total=len(lines), request_hash=f"h-{batch_id}", created_at=T)
    return dataclasses.replace(record, **changes)


def ids(records: list[JobRecord]) -> list[str]:
    return [record.job_id for record in records]


# Submitting and reading.


async def test_a_submitted_job_reads_back_as_it_was_and_only_for_its_owner(database: Database) -> None:
    full = job("j1", batch_id="b1", custom_id="line-1", idempotency_key="idem-1", expires_at=T + 86400)
    assert await database.jobs.submit(full) == (full, True)
    assert await database.jobs.get("j1") == full
    assert await database.jobs.get("j1", owner="key:k1") == full
    assert await database.jobs.get("j1", owner="key:k2") is None
    assert await database.jobs.get("j-unknown") is None
    assert (await database.jobs.get("j1")).state is JobState.QUEUED


async def test_the_same_idempotency_key_and_request_returns_the_first_job(database: Database) -> None:
    first = job("j1", idempotency_key="idem-1")
    await submit_all(database, first)
    assert await database.jobs.submit(job("j2", idempotency_key="idem-1", created_at=T + 5)) == (first, False)
    assert await database.jobs.get("j2") is None


async def test_the_same_idempotency_key_with_another_request_conflicts_naming_the_first_job(
    database: Database,
) -> None:
    await submit_all(database, job("j1", idempotency_key="idem-1"))
    with pytest.raises(IdempotencyConflict) as raised:
        await database.jobs.submit(job("j2", idempotency_key="idem-1", request_hash="h-other"))
    assert raised.value.job_id == "j1"
    assert await database.jobs.get("j2") is None


async def test_idempotency_keys_are_per_owner_and_jobs_without_one_never_collide(database: Database) -> None:
    await submit_all(
        database,
        job("j1", idempotency_key="idem-1"),
        job("j2", owner="key:k2", idempotency_key="idem-1"),
        job("j3"),
        job("j4"),
    )
    assert ids(await database.jobs.list("key:k1")) == ["j4", "j3", "j1"]


async def test_concurrent_submits_with_one_key_make_one_job(database: Database) -> None:
    attempts = [job(f"j{index}", idempotency_key="idem-1") for index in range(8)]
    outcomes = await asyncio.gather(*(database.jobs.submit(attempt) for attempt in attempts))
    assert [inserted for _, inserted in outcomes].count(True) == 1
    assert len({stored.job_id for stored, _ in outcomes}) == 1
    assert len(await database.jobs.list("key:k1")) == 1


async def test_a_taken_job_id_or_a_priority_out_of_range_is_refused(database: Database) -> None:
    await submit_all(database, job("j1"))
    with pytest.raises(ValueError, match="exists already"):
        await database.jobs.submit(job("j1", request="other"))
    for priority in (0, 5):
        with pytest.raises(ValueError, match="priority"):
            await database.jobs.submit(job("j2", priority=priority))
    assert await database.jobs.get("j1") == job("j1")
    assert await database.jobs.get("j2") is None


async def test_list_is_the_owners_newest_first_within_a_batch_and_the_limit(database: Database) -> None:
    await submit_all(
        database,
        job("j1", created_at=T + 1),
        job("j2", created_at=T + 3, batch_id="b1"),
        job("j3", created_at=T + 2, batch_id="b1"),
        job("j4", owner="key:k2", created_at=T + 4, batch_id="b1"),
    )
    assert ids(await database.jobs.list("key:k1")) == ["j2", "j3", "j1"]
    assert ids(await database.jobs.list("key:k1", batch_id="b1")) == ["j2", "j3"]
    assert ids(await database.jobs.list("key:k1", limit=1)) == ["j2"]
    assert await database.jobs.list("key:k3") == []
    with pytest.raises(ValueError, match="limit"):
        await database.jobs.list("key:k1", limit=0)


# Claiming, leases and finishing.


async def test_claim_takes_the_highest_priority_first_then_the_oldest(database: Database) -> None:
    low_old = job("j-low-old", priority=1, created_at=T)
    high_new = job("j-high-new", priority=4, created_at=T + 20)
    high_old = job("j-high-old", priority=4, created_at=T + 10)
    normal = job("j-normal", priority=2, created_at=T + 5)
    await submit_all(database, low_old, high_new, high_old, normal)
    now = T + 100
    assert await database.jobs.claim("w1", now, LEASE_S, limit=2) == [
        claimed(high_old, "w1", now),
        claimed(high_new, "w1", now),
    ]
    assert await database.jobs.claim("w2", now, LEASE_S) == [claimed(normal, "w2", now)]
    assert await database.jobs.claim("w2", now, LEASE_S, limit=5) == [claimed(low_old, "w2", now)]
    assert await database.jobs.claim("w3", now, LEASE_S, limit=5) == []
    assert await database.jobs.get("j-high-old") == claimed(high_old, "w1", now)
    with pytest.raises(ValueError, match="limit"):
        await database.jobs.claim("w1", now, LEASE_S, limit=0)


async def test_claim_passes_over_jobs_past_their_window_and_finished_jobs(database: Database) -> None:
    await submit_all(
        database,
        job("j-window-over", expires_at=T + 50),
        job("j-window-open", expires_at=T + 200),
        job("j-cancelled"),
    )
    await database.jobs.cancel("j-cancelled", "key:k1", now=T + 1)
    assert ids(await database.jobs.claim("w1", T + 50, LEASE_S, limit=5)) == ["j-window-open"]


async def test_an_expired_lease_is_claimed_again_and_the_old_worker_has_lost_it(database: Database) -> None:
    await submit_all(database, job("j1"))
    assert ids(await database.jobs.claim("w1", T + 100, LEASE_S)) == ["j1"]
    # Until the lease has run out (strictly after lease_until), nobody else gets the job.
    assert await database.jobs.claim("w2", T + 100 + LEASE_S, LEASE_S) == []
    reclaimed = await database.jobs.claim("w2", T + 131, LEASE_S)
    assert reclaimed == [claimed(job("j1"), "w2", T + 131, attempts=2)]
    assert await database.jobs.heartbeat("j1", "w1", T + 132, LEASE_S) is False
    assert await database.jobs.finish("j1", "w1", JobState.COMPLETED, T + 133, result='{"text": "stale"}') is False
    assert await database.jobs.get("j1") == claimed(job("j1"), "w2", T + 131, attempts=2)
    assert await database.jobs.finish("j1", "w2", JobState.COMPLETED, T + 140, result='{"text": "hi"}') is True
    assert await database.jobs.get("j1") == dataclasses.replace(
        job("j1"),
        state=JobState.COMPLETED,
        attempts=2,
        result='{"text": "hi"}',
        started_at=T + 131,
        finished_at=T + 140,
        updated_at=T + 140,
    )


async def test_a_heartbeat_extends_only_the_holders_lease(database: Database) -> None:
    await submit_all(database, job("j1"), job("j-queued", created_at=T + 1))
    await database.jobs.claim("w1", T + 100, LEASE_S)
    assert await database.jobs.heartbeat("j1", "w1", T + 125, LEASE_S) is True
    assert await database.jobs.get("j1") == dataclasses.replace(
        claimed(job("j1"), "w1", T + 125), started_at=T + 100, updated_at=T + 125
    )
    # The first lease would have run out at T + 130; the extended one holds until T + 155.
    assert await database.jobs.claim("w2", T + 150, LEASE_S, limit=5) == [
        claimed(job("j-queued", created_at=T + 1), "w2", T + 150)
    ]
    assert await database.jobs.heartbeat("j1", "w2", T + 151, LEASE_S) is False
    assert await database.jobs.heartbeat("j-unknown", "w1", T + 151, LEASE_S) is False
    assert (await database.jobs.get("j1")).lease_until == T + 155


async def test_finish_records_a_failure_once_and_takes_only_a_finished_state(database: Database) -> None:
    await submit_all(database, job("j1"))
    await database.jobs.claim("w1", T + 100, LEASE_S)
    with pytest.raises(ValueError, match="COMPLETED or FAILED"):
        await database.jobs.finish("j1", "w1", JobState.CANCELLED, T + 110)
    assert await database.jobs.finish("j1", "w1", JobState.FAILED, T + 110, error="model unavailable") is True
    assert await database.jobs.finish("j1", "w1", JobState.COMPLETED, T + 120, result="{}") is False
    failed = await database.jobs.get("j1")
    assert failed == dataclasses.replace(
        job("j1"),
        state=JobState.FAILED,
        attempts=1,
        error="model unavailable",
        started_at=T + 100,
        finished_at=T + 110,
        updated_at=T + 110,
    )
    assert await database.jobs.claim("w2", T + 1000, LEASE_S) == []


async def test_concurrent_claimers_never_share_a_job_and_together_take_them_all(database_url: str) -> None:
    # Each claimer on its own database connection pool, as runners in separate processes would be.
    claimers = [await open_database(database_url) for _ in range(3)]
    try:
        lines = [job(f"j{index:03}", batch_id="b1", created_at=T + index % 7) for index in range(90)]
        await claimers[0].batches.submit(batch("b1", lines), lines)

        async def claim_until_empty(database: Database, worker: str) -> list[str]:
            taken: list[str] = []
            while batch := await database.jobs.claim(worker, T + 100, LEASE_S, limit=4):
                assert {record.lease_owner for record in batch} == {worker}
                taken += ids(batch)
            return taken

        loops = (claim_until_empty(each, f"w{index}") for index, each in enumerate(claimers))
        takes = await asyncio.wait_for(asyncio.gather(*loops), HANG_GUARD_S)
    finally:
        for each in claimers:
            await each.close()
    everything = [job_id for take in takes for job_id in take]
    assert len(everything) == len(set(everything)) == 90


# Cancelling.


async def test_cancel_ends_a_queued_job(database: Database) -> None:
    await submit_all(database, job("j1"))
    cancelled = dataclasses.replace(job("j1"), state=JobState.CANCELLED, finished_at=T + 10, updated_at=T + 10)
    assert await database.jobs.cancel("j1", "key:k1", T + 10) == cancelled
    assert await database.jobs.get("j1") == cancelled


async def test_cancel_ends_a_running_job_and_its_worker_then_loses_it(database: Database) -> None:
    await submit_all(database, job("j1"))
    await database.jobs.claim("w1", T + 100, LEASE_S)
    cancelled = await database.jobs.cancel("j1", "key:k1", T + 110)
    assert cancelled == dataclasses.replace(
        job("j1"), state=JobState.CANCELLED, attempts=1, started_at=T + 100, finished_at=T + 110, updated_at=T + 110
    )
    assert await database.jobs.heartbeat("j1", "w1", T + 111, LEASE_S) is False
    assert await database.jobs.finish("j1", "w1", JobState.COMPLETED, T + 112, result="{}") is False
    assert await database.jobs.get("j1") == cancelled


async def test_cancel_returns_a_finished_job_unchanged(database: Database) -> None:
    await submit_all(database, job("j1"))
    await database.jobs.claim("w1", T + 100, LEASE_S)
    await database.jobs.finish("j1", "w1", JobState.COMPLETED, T + 110, result="{}")
    completed = await database.jobs.get("j1")
    assert await database.jobs.cancel("j1", "key:k1", T + 120) == completed
    assert await database.jobs.get("j1") == completed


async def test_another_owners_job_cannot_be_cancelled_or_seen(database: Database) -> None:
    await submit_all(database, job("j1"))
    assert await database.jobs.cancel("j1", "key:k2", T + 10) is None
    assert await database.jobs.cancel("j-unknown", "key:k1", T + 10) is None
    assert await database.jobs.get("j1") == job("j1")


# Expiry, queue positions and pruning.


async def test_expire_ends_the_queued_jobs_whose_window_is_over_and_leaves_running_ones(database: Database) -> None:
    await submit_all(
        database,
        job("j-running", expires_at=T + 50, priority=4),
        job("j-due", expires_at=T + 50),
        job("j-overdue", expires_at=T + 40),
        job("j-later", expires_at=T + 51),
        job("j-no-window"),
    )
    await database.jobs.claim("w1", T + 10, LEASE_S)
    assert await database.jobs.expire(T + 50) == 2
    assert await database.jobs.expire(T + 50) == 0
    states = {record.job_id: record.state for record in await database.jobs.list("key:k1")}
    assert states == {
        "j-running": JobState.RUNNING,
        "j-due": JobState.EXPIRED,
        "j-overdue": JobState.EXPIRED,
        "j-later": JobState.QUEUED,
        "j-no-window": JobState.QUEUED,
    }
    assert await database.jobs.get("j-due") == dataclasses.replace(
        job("j-due", expires_at=T + 50), state=JobState.EXPIRED, finished_at=T + 50, updated_at=T + 50
    )


async def test_queue_position_counts_the_queued_jobs_claimed_before_it(database: Database) -> None:
    await submit_all(
        database,
        job("j-high", priority=3, created_at=T + 30),
        job("j-old", priority=2, created_at=T),
        job("j-new", priority=2, created_at=T + 10),
        job("j-low", priority=1, created_at=T - 100),
        job("j-running", priority=4, created_at=T - 200),
    )
    await database.jobs.claim("w1", T + 50, LEASE_S)
    positions = {job_id: await database.jobs.queue_position(job_id) for job_id in ("j-high", "j-old", "j-new", "j-low")}
    assert positions == {"j-high": 0, "j-old": 1, "j-new": 2, "j-low": 3}
    assert await database.jobs.queue_position("j-running") is None
    assert await database.jobs.queue_position("j-unknown") is None
    # The claim order agrees: the next claims take them in the positions' order.
    assert ids(await database.jobs.claim("w1", T + 60, LEASE_S, limit=4)) == ["j-high", "j-old", "j-new", "j-low"]


async def test_delete_finished_before_prunes_only_finished_jobs_older_than_the_time(database: Database) -> None:
    await submit_all(database, *(job(f"j{index}", created_at=T + index) for index in range(5)))
    await database.jobs.claim("w1", T + 10, LEASE_S, limit=3)
    await database.jobs.finish("j0", "w1", JobState.COMPLETED, T + 20, result="{}")
    await database.jobs.finish("j1", "w1", JobState.FAILED, T + 30, error="boom")
    await database.jobs.cancel("j3", "key:k1", T + 40)
    assert await database.jobs.delete_finished_before(T + 30) == 1
    assert await database.jobs.delete_finished_before(T + 41) == 2
    assert await database.jobs.delete_finished_before(T + 1000) == 0
    assert ids(await database.jobs.list("key:k1")) == ["j4", "j2"]


# The database as a whole.


async def test_the_migration_brings_a_database_at_0001_to_head_and_keeps_its_keys(database_url: str) -> None:
    normalized = normalize_url(database_url)
    connections = Connections(build_engine(normalized, Timeouts()), mask_url(normalized))
    try:
        async with connections.transaction(write_lock=True) as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001"))
        await KeyStore(connections).add(key("k1"))
    finally:
        await connections.dispose()
    assert await inspect(database_url, revision) == "0001"
    assert "jobs" not in await inspect(database_url, table_names)

    async with await open_database(database_url) as database:
        assert await database.keys.get("k1") == key("k1")
        await submit_all(database, job("j1"))
        assert await database.jobs.get("j1") == job("j1")
    assert await inspect(database_url, revision) == head_revision() == "0002"
    assert {"keys", "audit", "jobs"} <= set(await inspect(database_url, table_names))


async def test_a_stopped_server_makes_every_job_call_raise_store_unavailable(own_postgres: PostgresServer) -> None:
    async with await open_database(own_postgres.create_database()) as database:
        await submit_all(database, job("j1"))
        own_postgres.stop()
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: database.jobs.submit(job("j2")),
            lambda: database.jobs.claim("w1", T, LEASE_S),
            lambda: database.jobs.heartbeat("j1", "w1", T, LEASE_S),
            lambda: database.jobs.finish("j1", "w1", JobState.COMPLETED, T),
            lambda: database.jobs.cancel("j1", "key:k1", T),
            lambda: database.batches.submit(batch("b1", [job("j3", batch_id="b1")]), [job("j3", batch_id="b1")]),
            lambda: database.batches.get("b1", "key:k1"),
            lambda: database.batches.list("key:k1"),
            lambda: database.batches.cancel("b1", "key:k1", T),
            lambda: database.batches.counts("b1"),
            lambda: database.batches.delete_emptied_before(T),
            lambda: database.files.put(FileRecord("f1", "key:k1", "batch", "in.jsonl", 2, T), b"{}"),
            lambda: database.files.get("f1", "key:k1"),
            lambda: database.files.content("f1", "key:k1"),
            lambda: database.files.delete_unused_before(T),
            lambda: database.jobs.get("j1"),
            lambda: database.jobs.list("key:k1"),
            lambda: database.jobs.expire(T),
            lambda: database.jobs.queue_position("j1"),
            lambda: database.jobs.delete_finished_before(T),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(call(), HANG_GUARD_S)


def table_names(connection: Connection) -> list[str]:
    return inspect_schema(connection).get_table_names()
