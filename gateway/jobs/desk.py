"""Where callers submit jobs and batches and follow them: the store's jobs, seen only by their owner.

No grpc here: the gateway's JobsService and the OpenAI front's Batch API both call this, and map what it
raises (typed MeshErrors) once, each for its own surface. A job is acknowledged only once it is stored.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.jobs.work import JobWork, encode_work, work_hash
from services.shared.domain import Priority
from services.shared.errors import MeshError, already_exists, invalid_argument, not_found, unavailable
from services.shared.identity import Identity, Scope, Surface, encode_identity
from services.store import BatchRecord, Database, IdempotencyConflict, JobRecord, StoreUnavailable
from services.store.records import TERMINAL_STATES

# How soon a caller refused for an unavailable store may try again.
STORE_RETRY_SECONDS = 1.0
_MAX_LISTED = 1000
# Jobs whose last state this desk remembers, to answer status reads while the store is down.
_REMEMBERED_JOBS = 10_000


@dataclass(frozen=True)
class DeskTerms:
    # The completion window of a job that names none, and the longest one may name: OpenAI's 24 h, and a week.
    default_window_seconds: int = 86_400
    max_window_seconds: int = 7 * 86_400
    # OpenAI's limit on the lines of one batch.
    max_batch_lines: int = 50_000


@dataclass(frozen=True)
class Submitted:
    job: JobRecord
    # False when an idempotency key returned a job submitted before.
    created: bool
    position: int | None


@dataclass(frozen=True)
class BatchView:
    batch: BatchRecord
    # Lines by state name: every JobState is there.
    counts: dict[str, int]
    last_finished_at: float | None = None

    @property
    def finished(self) -> int:
        return sum(self.counts[state] for state in TERMINAL_STATES)

    @property
    def progress_percent(self) -> float:
        return 100.0 * self.finished / self.batch.total if self.batch.total else 100.0


class JobDesk:
    def __init__(self, database: Database, terms: DeskTerms | None = None, clock: Callable[[], float] = time.time):
        self._database = database
        self._terms = terms or DeskTerms()
        self._clock = clock
        self._remembered: OrderedDict[str, JobRecord] = OrderedDict()

    async def submit(
        self, identity: Identity, work: JobWork, idempotency_key: str = "", window_seconds: int = 0
    ) -> Submitted:
        now, job_id = self._clock(), f"job_{uuid.uuid4().hex}"
        window = self._window(window_seconds)
        encoded = encode_work(work)
        record = JobRecord(
            job_id=job_id,
            owner=identity.subject,
            priority=_priority(work, identity),
            request=encoded,
            request_hash=work_hash(encoded, str(window)),
            identity=_runner_identity(identity, job_id),
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key or None,
            expires_at=now + window,
        )
        with _stored():
            job, created = await self._database.jobs.submit(record)
            position = await self._database.jobs.queue_position(job.job_id)
        return Submitted(self._remember(job), created, position)

    async def job(self, identity: Identity, job_id: str) -> tuple[JobRecord, int | None]:
        """The job and, while it is queued, its place in the queue. While the store is down, the last
        state this desk saw of it, without a place."""
        try:
            job = await self._database.jobs.get(job_id, identity.subject)
            position = None if job is None else await self._database.jobs.queue_position(job_id)
        except StoreUnavailable as error:
            remembered = self._remembered.get(job_id)
            if remembered is None or remembered.owner != identity.subject:
                raise _store_refusal(error) from None
            return remembered, None
        return self._remember(_found(job, job_id)), position

    async def cancel(self, identity: Identity, job_id: str) -> JobRecord:
        with _stored():
            job = await self._database.jobs.cancel(job_id, identity.subject, self._clock())
        return self._remember(_found(job, job_id))

    async def jobs(self, identity: Identity, batch_id: str = "", limit: int = 0) -> list[JobRecord]:
        with _stored():
            return await self._database.jobs.list(identity.subject, batch_id or None, _limit(limit))

    async def submit_batch(
        self,
        identity: Identity,
        lines: Sequence[tuple[str, JobWork]],
        window_seconds: int = 0,
        idempotency_key: str = "",
        *,
        endpoint: str | None = None,
        input_file_id: str | None = None,
        metadata: str | None = None,
    ) -> tuple[BatchRecord, bool]:
        """Stores the batch and its lines (custom id, work), all or none."""
        if not lines:
            raise invalid_argument("EMPTY_BATCH", "a batch needs at least one line", field="lines")
        if len(lines) > self._terms.max_batch_lines:
            raise invalid_argument(
                "BATCH_TOO_LARGE", f"a batch has at most {self._terms.max_batch_lines} lines, not {len(lines)}"
            )
        _check_unique([custom_id for custom_id, _ in lines])
        now, batch_id = self._clock(), f"batch_{uuid.uuid4().hex}"
        window = self._window(window_seconds)
        encoded = [encode_work(work) for _, work in lines]
        records = [
            JobRecord(
                job_id=job_id,
                owner=identity.subject,
                priority=_priority(work, identity),
                request=text,
                request_hash=work_hash(text),
                identity=_runner_identity(identity, job_id),
                # A microsecond apart: lines are claimed, and their output written, in the order they came.
                created_at=now + index * 1e-6,
                updated_at=now,
                batch_id=batch_id,
                custom_id=custom_id,
                expires_at=now + window,
            )
            for index, ((custom_id, work), text) in enumerate(zip(lines, encoded, strict=True))
            for job_id in (f"job_{uuid.uuid4().hex}",)
        ]
        batch = BatchRecord(
            batch_id=batch_id,
            owner=identity.subject,
            total=len(records),
            request_hash=work_hash(*[record.custom_id or "" for record in records], *encoded, str(window)),
            created_at=now,
            idempotency_key=idempotency_key or None,
            expires_at=now + window,
            endpoint=endpoint,
            input_file_id=input_file_id,
            metadata=metadata,
        )
        with _stored():
            return await self._database.batches.submit(batch, records)

    async def batch(self, identity: Identity, batch_id: str) -> BatchView:
        with _stored():
            batch = await self._database.batches.get(batch_id, identity.subject)
            if batch is None:
                raise _no_batch(batch_id)
            return await self._view(batch)

    async def cancel_batch(self, identity: Identity, batch_id: str) -> BatchView:
        with _stored():
            if await self._database.batches.cancel(batch_id, identity.subject, self._clock()) is None:
                raise _no_batch(batch_id)
        return await self.batch(identity, batch_id)

    async def batches(self, identity: Identity, limit: int = 0, after: str = "") -> list[BatchView]:
        """The caller's batches, newest first; after a batch id when paging."""
        with _stored():
            listed = await self._database.batches.list(identity.subject, _limit(limit), after or None)
            return [await self._view(batch) for batch in listed]

    async def lines(self, identity: Identity, batch_id: str) -> list[JobRecord]:
        """Every line of the caller's batch, in submission order."""
        with _stored():
            if await self._database.batches.get(batch_id, identity.subject) is None:
                raise _no_batch(batch_id)
            return await self._database.batches.lines(batch_id, identity.subject)

    async def _view(self, batch: BatchRecord) -> BatchView:
        batches = self._database.batches
        return BatchView(batch, await batches.counts(batch.batch_id), await batches.last_finished_at(batch.batch_id))

    def _window(self, asked: int) -> int:
        if asked < 0 or asked > self._terms.max_window_seconds:
            raise invalid_argument(
                "INVALID_COMPLETION_WINDOW",
                f"completion_window_seconds must be in [0, {self._terms.max_window_seconds}], not {asked}",
                field="completion_window_seconds",
            )
        return asked or self._terms.default_window_seconds

    def _remember(self, job: JobRecord) -> JobRecord:
        self._remembered[job.job_id] = job
        self._remembered.move_to_end(job.job_id)
        while len(self._remembered) > _REMEMBERED_JOBS:
            self._remembered.popitem(last=False)
        return job


def _priority(work: JobWork, identity: Identity) -> int:
    # Unset is LOW: a job is background work unless asked otherwise. Capped at the credential's ceiling here
    # too, so that a job does not jump the queue of jobs that the scheduler would then serve below it.
    asked = Priority(work.request.priority) if work.request.priority else Priority.LOW
    return int(min(asked, identity.limits.max_priority))


def _runner_identity(identity: Identity, job_id: str) -> str:
    """Who the job runs as: its owner, with the owner's limits, on the jobs surface, named by the job. The
    jobs scope lets its holder generate through a job, so the run carries the inference scope."""
    runs_as = dataclasses.replace(
        identity, scopes=identity.scopes | {Scope.INFERENCE}, surface=Surface.JOBS, route=f"job {job_id}"
    )
    return encode_identity(runs_as)


def _check_unique(custom_ids: list[str]) -> None:
    seen: set[str] = set()
    for index, custom_id in enumerate(custom_ids):
        if custom_id in seen:
            raise invalid_argument(
                "DUPLICATE_CUSTOM_ID", f"line {index}: custom_id {custom_id!r} is used twice", field="custom_id"
            )
        seen.add(custom_id)


def _limit(asked: int) -> int:
    if not 0 <= asked <= _MAX_LISTED:
        raise invalid_argument("INVALID_LIMIT", f"limit must be in [0, {_MAX_LISTED}], not {asked}", field="limit")
    return asked or 100


def _no_batch(batch_id: str) -> MeshError:
    return not_found("BATCH_NOT_FOUND", f"no batch {batch_id!r} of yours", batch_id=batch_id)


def _found(job: JobRecord | None, job_id: str) -> JobRecord:
    if job is None:
        raise not_found("JOB_NOT_FOUND", f"no job {job_id!r} of yours", task_id=job_id)
    return job


def _store_refusal(error: StoreUnavailable) -> MeshError:
    return unavailable("STORE_UNAVAILABLE", str(error), STORE_RETRY_SECONDS)


@contextmanager
def _stored() -> Iterator[None]:
    try:
        yield
    except StoreUnavailable as error:
        raise _store_refusal(error) from None
    except IdempotencyConflict as error:
        raise already_exists("IDEMPOTENCY_KEY_REUSED", str(error), existing=error.job_id) from None
