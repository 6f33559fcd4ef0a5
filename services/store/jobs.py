"""Asynchronous jobs and batch lines: submitted by callers, claimed by runners under a lease, finished or cancelled.

Every method is one transaction. A runner holds a job while its lease lasts and extends it by heartbeats; a
lease that runs out (its runner died) lets another runner claim the job again. Only the lease's holder may
finish a job, so a runner that lost its lease, or whose job was cancelled, learns it from a False.
"""

from __future__ import annotations

import builtins
import dataclasses
from typing import Any

from sqlalchemy import and_, delete, exc, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store.connections import Connections
from services.store.errors import IdempotencyConflict
from services.store.records import ACTIVE_STATES, TERMINAL_STATES, JobRecord, JobState
from services.store.schema import jobs

_PRIORITIES = range(1, 5)
# Sorted tuples, so that a statement's parameters come in the same order every time.
_ACTIVE = tuple(sorted(ACTIVE_STATES))
_TERMINAL = tuple(sorted(TERMINAL_STATES))
_FINISHED_STATES = frozenset({JobState.COMPLETED, JobState.FAILED})
# The order jobs are claimed in; job_id settles a tie so that claim and queue_position agree.
_CLAIM_ORDER = (jobs.c.priority.desc(), jobs.c.created_at, jobs.c.job_id)
_NO_LEASE = {"lease_owner": None, "lease_until": None}


class JobStore:
    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def submit(self, job: JobRecord) -> tuple[JobRecord, bool]:
        """Stores a new job: (job, True). A job of the same owner and idempotency key exists already: (it, False)
        if it was asked with the same request_hash, else IdempotencyConflict. ValueError if job_id is taken."""
        row = to_job_row(job)
        try:
            async with self._connections.transaction() as connection:
                await connection.execute(jobs.insert().values(row))
            return job, True
        except exc.IntegrityError:
            # A concurrent submit with the same key may have won: its job is committed, so it reads back here.
            existing = await self._by_idempotency_key(job.owner, job.idempotency_key)
            if existing is not None:
                if existing.request_hash != job.request_hash:
                    raise IdempotencyConflict(existing.job_id) from None
                return existing, False
            if await self.get(job.job_id) is not None:
                raise ValueError(f"a job with id {job.job_id!r} exists already") from None
            raise

    async def claim(self, worker: str, now: float, lease_seconds: float, limit: int = 1) -> builtins.list[JobRecord]:
        """Takes up to `limit` jobs for `worker`, highest priority first, then oldest: queued jobs still inside
        their window, and running jobs whose lease ran out. Returns them as claimed (RUNNING, leased)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        claimable = or_(
            and_(jobs.c.state == JobState.QUEUED, or_(jobs.c.expires_at.is_(None), jobs.c.expires_at > now)),
            and_(jobs.c.state == JobState.RUNNING, jobs.c.lease_until < now),
        )
        # PostgreSQL locks the rows it picks and skips those another claimer holds; SQLite ignores FOR UPDATE,
        # and its write lock, taken at BEGIN, keeps every other claimer out until this one commits.
        picking = (
            select(jobs.c.job_id)
            .where(claimable)
            .order_by(*_CLAIM_ORDER)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claiming = update(jobs).values(
            state=JobState.RUNNING,
            lease_owner=worker,
            lease_until=now + lease_seconds,
            attempts=jobs.c.attempts + 1,
            started_at=now,
            updated_at=now,
        )
        async with self._connections.transaction(write_lock=True) as connection:
            picked = (await connection.execute(picking)).scalars().all()
            if not picked:
                return []
            rows = (await connection.execute(claiming.where(jobs.c.job_id.in_(picked)).returning(jobs))).all()
        # RETURNING keeps no order.
        return sorted((to_job_record(row) for row in rows), key=lambda job: (-job.priority, job.created_at, job.job_id))

    async def heartbeat(self, job_id: str, worker: str, now: float, lease_seconds: float) -> bool:
        """Extends the lease while `worker` holds it; False if the job was cancelled or claimed by another."""
        statement = (
            update(jobs).where(*_held_by(job_id, worker)).values(lease_until=now + lease_seconds, updated_at=now)
        )
        return await self._updated(statement) == 1

    async def finish(
        self, job_id: str, worker: str, state: str, now: float, result: str | None = None, error: str | None = None
    ) -> bool:
        """Ends a job `worker` holds as COMPLETED or FAILED; False, and nothing changes, if it holds it no more."""
        if state not in _FINISHED_STATES:
            raise ValueError(f"a runner finishes a job as COMPLETED or FAILED, not {state!r}")
        statement = (
            update(jobs)
            .where(*_held_by(job_id, worker))
            .values(state=state, result=result, error=error, finished_at=now, updated_at=now, **_NO_LEASE)
        )
        return await self._updated(statement) == 1

    async def cancel(self, job_id: str, owner: str, now: float) -> JobRecord | None:
        """Cancels a queued or running job of `owner` and returns it; a finished job comes back as it was.
        None if `owner` has no such job: another owner's jobs are not there for it."""
        cancelling = (
            update(jobs)
            .where(jobs.c.job_id == job_id, jobs.c.owner == owner, jobs.c.state.in_(_ACTIVE))
            .values(state=JobState.CANCELLED, finished_at=now, updated_at=now, **_NO_LEASE)
            .returning(jobs)
        )
        async with self._connections.transaction() as connection:
            cancelled = (await connection.execute(cancelling)).first()
            if cancelled is not None:
                return to_job_record(cancelled)
            return await _read_one(connection, select(jobs).where(jobs.c.job_id == job_id, jobs.c.owner == owner))

    async def get(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        """The job; with `owner`, only if it is that owner's (None for the runner, which serves everyone)."""
        query = select(jobs).where(jobs.c.job_id == job_id)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        async with self._connections.transaction() as connection:
            return await _read_one(connection, query)

    async def list(self, owner: str, batch_id: str | None = None, limit: int = 100) -> builtins.list[JobRecord]:
        """`owner`'s jobs (of one batch, with batch_id), newest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        query = select(jobs).where(jobs.c.owner == owner).order_by(jobs.c.created_at.desc(), jobs.c.job_id.desc())
        if batch_id is not None:
            query = query.where(jobs.c.batch_id == batch_id)
        async with self._connections.transaction() as connection:
            rows = (await connection.execute(query.limit(limit))).all()
        return [to_job_record(row) for row in rows]

    async def expire(self, now: float) -> int:
        """Queued jobs whose window has ended become EXPIRED; returns how many. A running job may still finish."""
        statement = (
            update(jobs)
            .where(jobs.c.state == JobState.QUEUED, jobs.c.expires_at <= now)
            .values(state=JobState.EXPIRED, finished_at=now, updated_at=now)
        )
        return await self._updated(statement)

    async def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs would be claimed before this one; None unless it is queued."""
        async with self._connections.transaction() as connection:
            job = await _read_one(connection, select(jobs).where(jobs.c.job_id == job_id))
            if job is None or job.state != JobState.QUEUED:
                return None
            ahead = or_(
                jobs.c.priority > job.priority,
                and_(jobs.c.priority == job.priority, jobs.c.created_at < job.created_at),
                and_(jobs.c.priority == job.priority, jobs.c.created_at == job.created_at, jobs.c.job_id < job.job_id),
            )
            query = select(func.count()).select_from(jobs).where(jobs.c.state == JobState.QUEUED, ahead)
            return (await connection.execute(query)).scalar_one()

    async def delete_finished_before(self, at: float) -> int:
        """Deletes the jobs that finished before `at`; returns how many. A batch's lines stay while any line
        of it is unfinished, so that its output, when it comes, has every line."""
        sibling = jobs.alias("sibling")
        batch_unfinished = (
            select(sibling.c.job_id).where(sibling.c.batch_id == jobs.c.batch_id, sibling.c.state.in_(_ACTIVE)).exists()
        )
        statement = delete(jobs).where(
            jobs.c.state.in_(_TERMINAL), jobs.c.finished_at < at, or_(jobs.c.batch_id.is_(None), ~batch_unfinished)
        )
        return await self._updated(statement)

    async def _by_idempotency_key(self, owner: str, idempotency_key: str | None) -> JobRecord | None:
        if idempotency_key is None:
            return None
        query = select(jobs).where(jobs.c.owner == owner, jobs.c.idempotency_key == idempotency_key)
        async with self._connections.transaction() as connection:
            return await _read_one(connection, query)

    async def _updated(self, statement: Any) -> int:
        async with self._connections.transaction() as connection:
            result = await connection.execute(statement)
        return result.rowcount


def _held_by(job_id: str, worker: str) -> tuple[Any, ...]:
    return jobs.c.job_id == job_id, jobs.c.state == JobState.RUNNING, jobs.c.lease_owner == worker


async def _read_one(connection: AsyncConnection, query: Any) -> JobRecord | None:
    row = (await connection.execute(query)).first()
    return None if row is None else to_job_record(row)


def to_job_row(job: JobRecord) -> dict[str, Any]:
    if job.priority not in _PRIORITIES:
        raise ValueError(f"a job's priority is 1 to 4, not {job.priority!r}")
    return {**dataclasses.asdict(job), "state": JobState(job.state).value}


def to_job_record(row: Row[Any]) -> JobRecord:
    values = dict(row._mapping)
    return JobRecord(**{**values, "state": JobState(values["state"])})
