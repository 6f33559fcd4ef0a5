"""Batches: many jobs submitted together, all or none, cancelled together, and counted by state.

A batch's lines are ordinary jobs carrying its batch_id, so runners claim them like any other job.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exc, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store.connections import Connections
from services.store.errors import IdempotencyConflict
from services.store.jobs import to_job_record, to_job_row
from services.store.records import ACTIVE_STATES, BatchRecord, JobRecord, JobState
from services.store.schema import batches, jobs

_ACTIVE = tuple(sorted(ACTIVE_STATES))


class BatchStore:
    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def submit(self, batch: BatchRecord, lines: Sequence[JobRecord]) -> tuple[BatchRecord, bool]:
        """Stores the batch and every line in one transaction: (batch, True). The owner's idempotency key
        is taken already: (that batch, False) if it was asked with the same request_hash, else
        IdempotencyConflict. ValueError if a line's id or idempotency key is taken."""
        if any(line.batch_id != batch.batch_id or line.owner != batch.owner for line in lines):
            raise ValueError("every line of a batch carries its batch_id and owner")
        if batch.total != len(lines):
            raise ValueError(f"the batch says {batch.total} lines but has {len(lines)}")
        try:
            async with self._connections.transaction() as connection:
                await connection.execute(batches.insert().values(dataclasses.asdict(batch)))
                if lines:
                    await connection.execute(jobs.insert(), [to_job_row(line) for line in lines])
            return batch, True
        except exc.IntegrityError as error:
            existing = await self._by_idempotency_key(batch.owner, batch.idempotency_key)
            if existing is not None:
                if existing.request_hash != batch.request_hash:
                    raise IdempotencyConflict(existing.batch_id) from None
                return existing, False
            raise ValueError(f"a batch or line id or idempotency key is taken: {_first_line(error)}") from None

    async def get(self, batch_id: str, owner: str) -> BatchRecord | None:
        """`owner`'s batch; None if it has none of that id."""
        async with self._connections.transaction() as connection:
            return await _read_one(connection, select(batches).where(*_owned(batch_id, owner)))

    async def list(self, owner: str, limit: int = 100, before: str | None = None) -> builtins.list[BatchRecord]:
        """`owner`'s batches, newest first; after `before` (a batch id) when paging."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        query = select(batches).where(batches.c.owner == owner)
        async with self._connections.transaction() as connection:
            if before is not None:
                start = await _read_one(connection, select(batches).where(*_owned(before, owner)))
                if start is not None:
                    query = query.where(batches.c.created_at < start.created_at)
            order = (batches.c.created_at.desc(), batches.c.batch_id.desc())
            rows = (await connection.execute(query.order_by(*order).limit(limit))).all()
        return [_to_record(row) for row in rows]

    async def counts(self, batch_id: str) -> dict[str, int]:
        """How many of the batch's lines are in each state; every state is there, 0 when none are."""
        query = select(jobs.c.state, func.count()).where(jobs.c.batch_id == batch_id).group_by(jobs.c.state)
        async with self._connections.transaction() as connection:
            rows = (await connection.execute(query)).all()
        return {state.value: 0 for state in JobState} | {state: count for state, count in rows}

    async def last_finished_at(self, batch_id: str) -> float | None:
        """When the batch's last line to end ended; None while none has."""
        query = select(func.max(jobs.c.finished_at)).where(jobs.c.batch_id == batch_id)
        async with self._connections.transaction() as connection:
            return (await connection.execute(query)).scalar_one_or_none()

    async def lines(self, batch_id: str, owner: str) -> builtins.list[JobRecord]:
        """Every line of `owner`'s batch, in the order they were submitted."""
        query = (
            select(jobs)
            .where(jobs.c.batch_id == batch_id, jobs.c.owner == owner)
            .order_by(jobs.c.created_at, jobs.c.job_id)
        )
        async with self._connections.transaction() as connection:
            rows = (await connection.execute(query)).all()
        return [to_job_record(row) for row in rows]

    async def cancel(self, batch_id: str, owner: str, now: float) -> int | None:
        """Marks `owner`'s batch cancelled and cancels its queued and running lines; returns how many.
        Finished lines keep their results. None if `owner` has no such batch."""
        marking = (
            update(batches).where(*_owned(batch_id, owner), batches.c.cancelled_at.is_(None)).values(cancelled_at=now)
        )
        cancelling = (
            update(jobs)
            .where(jobs.c.batch_id == batch_id, jobs.c.owner == owner, jobs.c.state.in_(_ACTIVE))
            .values(state=JobState.CANCELLED, finished_at=now, updated_at=now, lease_owner=None, lease_until=None)
        )
        # It reads before it writes: on SQLite, the write lock is taken first, as a read lock cannot be
        # upgraded once another writer has committed.
        async with self._connections.transaction(write_lock=True) as connection:
            if (await _read_one(connection, select(batches).where(*_owned(batch_id, owner)))) is None:
                return None
            await connection.execute(marking)
            return (await connection.execute(cancelling)).rowcount

    async def delete_emptied_before(self, at: float) -> int:
        """Deletes the batches created before `at` whose lines are all gone (deleted past retention)."""
        emptied = ~select(jobs.c.job_id).where(jobs.c.batch_id == batches.c.batch_id).exists()
        statement = delete(batches).where(batches.c.created_at < at, emptied)
        async with self._connections.transaction() as connection:
            return (await connection.execute(statement)).rowcount

    async def _by_idempotency_key(self, owner: str, idempotency_key: str | None) -> BatchRecord | None:
        if idempotency_key is None:
            return None
        query = select(batches).where(batches.c.owner == owner, batches.c.idempotency_key == idempotency_key)
        async with self._connections.transaction() as connection:
            return await _read_one(connection, query)


def _owned(batch_id: str, owner: str) -> tuple[Any, ...]:
    return batches.c.batch_id == batch_id, batches.c.owner == owner


async def _read_one(connection: AsyncConnection, query: Any) -> BatchRecord | None:
    row = (await connection.execute(query)).first()
    return None if row is None else _to_record(row)


def _to_record(row: Row[Any]) -> BatchRecord:
    return BatchRecord(**dict(row._mapping))


def _first_line(error: BaseException) -> str:
    # SQLAlchemy appends the statement and its parameters on the lines after: the parameters are the requests.
    return str(error.orig if isinstance(error, exc.DBAPIError) else error).strip().split("\n")[0]
