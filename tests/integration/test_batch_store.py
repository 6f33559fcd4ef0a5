"""The batch and file stores on both backends: SQLite in a file and a real PostgreSQL server.

Time is the `now` each call is given: no test waits for a clock.
"""

from __future__ import annotations

import dataclasses

import pytest

from services.store import Database, FileRecord, IdempotencyConflict, JobState
from tests.integration.test_job_store import LEASE_S, T, batch, ids, job


async def test_a_batch_is_stored_whole_with_its_lines_or_not_at_all(database: Database) -> None:
    lines = [job(f"b1-{index}", batch_id="b1", custom_id=f"line-{index}", created_at=T + index) for index in range(3)]
    first = batch("b1", lines, endpoint="/v1/chat/completions", input_file_id="file-1", metadata='{"a": "b"}')
    assert await database.batches.submit(first, lines) == (first, True)
    assert await database.batches.get("b1", "key:k1") == first
    assert await database.jobs.list("key:k1", batch_id="b1") == lines[::-1]
    # One line's id is taken: neither the batch nor any of its lines is stored.
    clashing = [job("b2-0", batch_id="b2"), job("b1-1", batch_id="b2")]
    with pytest.raises(ValueError, match="taken"):
        await database.batches.submit(batch("b2", clashing), clashing)
    assert await database.batches.get("b2", "key:k1") is None
    assert await database.jobs.list("key:k1", batch_id="b2") == []


async def test_a_batch_must_carry_its_lines(database: Database) -> None:
    lines = [job("b1-0", batch_id="b1")]
    with pytest.raises(ValueError, match="batch_id and owner"):
        await database.batches.submit(batch("b1", [job("x", batch_id="other")]), [job("x", batch_id="other")])
    with pytest.raises(ValueError, match="says 2 lines"):
        await database.batches.submit(dataclasses.replace(batch("b1", lines), total=2), lines)


async def test_an_idempotency_key_returns_the_first_batch_or_conflicts(database: Database) -> None:
    lines = [job("b1-0", batch_id="b1")]
    first = batch("b1", lines, idempotency_key="nightly")
    await database.batches.submit(first, lines)
    again = [job("b2-0", batch_id="b2")]
    assert await database.batches.submit(batch("b2", again, idempotency_key="nightly", request_hash="h-b1"), again) == (
        first,
        False,
    )
    with pytest.raises(IdempotencyConflict):
        await database.batches.submit(batch("b3", [job("b3-0", batch_id="b3")], idempotency_key="nightly"),
                                      [job("b3-0", batch_id="b3")])  # fmt: skip
    # Another owner's equal key is its own batch.
    theirs = [job("b4-0", owner="key:k2", batch_id="b4")]
    assert (await database.batches.submit(batch("b4", theirs, owner="key:k2", idempotency_key="nightly"), theirs))[1]
    assert ids(await database.jobs.list("key:k1")) == ["b1-0"]


async def test_cancel_ends_the_unfinished_lines_and_keeps_what_finished(database: Database) -> None:
    lines = [job(f"b1-{index}", batch_id="b1", created_at=T + index) for index in range(4)]
    await database.batches.submit(batch("b1", lines), lines)
    others = [job("b2-0", batch_id="b2", created_at=T + 10)]
    await database.batches.submit(batch("b2", others), others)
    await database.jobs.submit(job("j-alone", created_at=T + 10))
    # The two oldest lines run; one of them completes.
    await database.jobs.claim("w1", T + 100, LEASE_S, limit=2)
    await database.jobs.finish("b1-0", "w1", JobState.COMPLETED, T + 110, result="{}")
    assert await database.batches.cancel("b1", "key:k2", T + 120) is None
    assert await database.batches.cancel("b1", "key:k1", T + 120) == 3
    assert await database.batches.cancel("b1", "key:k1", T + 130) == 0
    assert (await database.batches.get("b1", "key:k1")).cancelled_at == T + 120
    # The runner that held b1-1 learns it is cancelled from its heartbeat, and cannot finish it.
    assert not await database.jobs.heartbeat("b1-1", "w1", T + 121, LEASE_S)
    assert not await database.jobs.finish("b1-1", "w1", JobState.COMPLETED, T + 122, result="{}")
    states = {record.job_id: record.state for record in await database.jobs.list("key:k1")}
    assert states == {
        "b1-0": JobState.COMPLETED,
        "b1-1": JobState.CANCELLED,
        "b1-2": JobState.CANCELLED,
        "b1-3": JobState.CANCELLED,
        "b2-0": JobState.QUEUED,
        "j-alone": JobState.QUEUED,
    }


async def test_counts_name_every_state(database: Database) -> None:
    lines = [job(f"b1-{index}", batch_id="b1", created_at=T + index, expires_at=T + 500) for index in range(5)]
    await database.batches.submit(batch("b1", lines), lines)
    assert await database.batches.counts("b1") == {state.value: 0 for state in JobState} | {"QUEUED": 5}
    await database.jobs.claim("w1", T + 100, LEASE_S, limit=3)
    await database.jobs.finish("b1-0", "w1", JobState.COMPLETED, T + 110, result="{}")
    await database.jobs.finish("b1-1", "w1", JobState.FAILED, T + 110, error="boom")
    await database.jobs.cancel("b1-3", "key:k1", T + 120)
    await database.jobs.expire(T + 500)
    assert await database.batches.counts("b1") == {
        "QUEUED": 0,
        "RUNNING": 1,
        "COMPLETED": 1,
        "FAILED": 1,
        "CANCELLED": 1,
        "EXPIRED": 1,
    }
    assert await database.batches.counts("b-unknown") == dict.fromkeys(JobState, 0)


async def test_list_is_the_owners_batches_newest_first_and_pages(database: Database) -> None:
    for index in range(5):
        lines = [job(f"b{index}-0", batch_id=f"b{index}")]
        await database.batches.submit(batch(f"b{index}", lines, created_at=T + index), lines)
    theirs = [job("x-0", owner="key:k2", batch_id="x")]
    await database.batches.submit(batch("x", theirs, owner="key:k2", created_at=T + 9), theirs)
    page = await database.batches.list("key:k1", limit=2)
    assert [each.batch_id for each in page] == ["b4", "b3"]
    after = await database.batches.list("key:k1", limit=10, before="b3")
    assert [each.batch_id for each in after] == ["b2", "b1", "b0"]
    with pytest.raises(ValueError):
        await database.batches.list("key:k1", limit=0)


async def test_a_batch_is_deleted_once_its_lines_are(database: Database) -> None:
    lines = [job("b1-0", batch_id="b1")]
    await database.batches.submit(batch("b1", lines), lines)
    assert await database.batches.delete_emptied_before(T + 1000) == 0
    await database.batches.cancel("b1", "key:k1", T + 10)
    assert await database.jobs.delete_finished_before(T + 1000) == 1
    assert await database.batches.delete_emptied_before(T) == 0
    assert await database.batches.delete_emptied_before(T + 1000) == 1
    assert await database.batches.get("b1", "key:k1") is None


async def test_a_file_is_its_owners_and_is_kept_while_a_batch_reads_it(database: Database) -> None:
    content = b'{"custom_id": "a"}\n'
    record = FileRecord("file-1", "key:k1", "batch", "in.jsonl", len(content), T)
    await database.files.put(record, content)
    assert await database.files.get("file-1", "key:k1") == record
    assert await database.files.content("file-1", "key:k1") == content
    assert await database.files.get("file-1", "key:k2") is None
    assert await database.files.content("file-1", "key:k2") is None
    with pytest.raises(ValueError, match="says 3 bytes"):
        await database.files.put(FileRecord("file-2", "key:k1", "batch", "x", 3, T), b"{}")
    lines = [job("b1-0", batch_id="b1")]
    await database.batches.submit(batch("b1", lines, input_file_id="file-1"), lines)
    assert await database.files.delete_unused_before(T + 1000) == 0
    await database.batches.cancel("b1", "key:k1", T + 10)
    assert await database.files.delete_unused_before(T) == 0
    assert await database.files.delete_unused_before(T + 1000) == 1
    assert await database.files.get("file-1", "key:k1") is None


async def test_finished_lines_are_kept_while_their_batch_has_unfinished_ones(database: Database) -> None:
    lines = [job(f"b1-{index}", batch_id="b1", created_at=T + index) for index in range(2)]
    await database.batches.submit(batch("b1", lines), lines)
    await database.jobs.claim("w1", T + 10, LEASE_S)
    await database.jobs.finish("b1-0", "w1", JobState.COMPLETED, T + 20, result="{}")
    assert await database.jobs.delete_finished_before(T + 1000) == 0
    await database.jobs.cancel("b1-1", "key:k1", T + 30)
    assert await database.jobs.delete_finished_before(T + 1000) == 2
