"""The job runner's loop: claim jobs under a lease, generate each through the gateway as its owner, keep
the lease alive by heartbeats, and store how each ended.

Delivery is at least once. A runner that dies loses its leases when they run out, and another runner (or
this one, restarted) claims those jobs again and runs them from the start; so does a generation cut by a
gateway, scheduler or inference crash. A heartbeat that finds the job cancelled, or leased to someone else,
stops its generation at once. No grpc here: the gateway is a Protocol, as the OpenAI front sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from meshserve.gateway.v1 import gateway_pb2 as pb
from prometheus_client import Counter, Gauge

from gateway.core.relay import PREEMPTED
from gateway.jobs.work import JobFailure, JobKind, JobOutcome, JobWork, decode_work, encode_failure, encode_outcome
from gateway.openai.responses import FINISH_REASONS, CompletionWriter
from services.shared.errors import ErrorKind, MeshError
from services.store import Database, JobRecord, JobState, StoreUnavailable

log = logging.getLogger("gateway.jobs")

JOBS_CLAIMED = Counter("meshserve_jobs_claimed_total", "Jobs a runner took, counting each re-run.")
JOBS_FINISHED = Counter("meshserve_jobs_finished_total", "Jobs a runner ended, by final state.", ["state"])
JOBS_RETRIED = Counter("meshserve_jobs_generation_retries_total", "Generations tried again, by reason.", ["reason"])
JOBS_RUNNING = Gauge("meshserve_jobs_running", "Jobs this runner is generating now.")

# Refusals that pass: the queue or a limit is full, or a part of the mesh is down for a moment.
_RETRIED_KINDS = frozenset({ErrorKind.RESOURCE_EXHAUSTED, ErrorKind.UNAVAILABLE})


class Gateway(Protocol):
    def generate(
        self, request: pb.GenerateRequest, timeout: float, identity: str
    ) -> AsyncIterator[pb.GenerateResponse]: ...


@dataclass(frozen=True)
class RunnerTerms:
    worker: str
    # Jobs generated at once; more wait in the store, where their queue position is told.
    concurrency: int = 4
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 1.0
    # How often an idle runner looks for work.
    poll_seconds: float = 0.2
    # A job taken this many times (each a crash mid-run) fails rather than crash the mesh once more.
    max_attempts: int = 3
    # How long one run may take, retries included; the completion window caps the wait before it starts.
    run_timeout_seconds: float = 600.0
    # How long finished jobs, their batches and their files are kept.
    retention_seconds: float = 86_400.0
    maintenance_seconds: float = 5.0
    retry_min_seconds: float = 0.2
    retry_max_seconds: float = 5.0


class JobRunner:
    def __init__(
        self, database: Database, gateway: Gateway, terms: RunnerTerms, clock: Callable[[], float] = time.time
    ) -> None:
        self._database, self._gateway, self._terms, self._clock = database, gateway, terms, clock
        self._running: set[asyncio.Task[None]] = set()
        self._last_maintenance = float("-inf")

    async def run(self) -> None:
        """Runs until cancelled; then stops its generations, leaving their jobs to be claimed again."""
        try:
            while True:
                claimed = await self._fill()
                await self._maintain()
                await self._idle(claimed)
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _fill(self) -> int:
        free = self._terms.concurrency - len(self._running)
        if free <= 0:
            return 0
        try:
            jobs = await self._database.jobs.claim(self._terms.worker, self._clock(), self._terms.lease_seconds, free)
        except StoreUnavailable as error:
            log.warning("cannot claim jobs: %s", error)
            return 0
        for job in jobs:
            JOBS_CLAIMED.inc()
            task = asyncio.create_task(self._run_one(job), name=f"job {job.job_id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        JOBS_RUNNING.set(len(self._running))
        return len(jobs)

    async def _idle(self, claimed: int) -> None:
        # Full, or the queue was empty: wait for a job to end or for the next look. Claimed some with
        # room left: look again at once, for the rest of what is queued.
        if claimed and len(self._running) < self._terms.concurrency:
            return
        if self._running:
            await asyncio.wait(self._running, timeout=self._terms.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(self._terms.poll_seconds)
        JOBS_RUNNING.set(len(self._running))

    async def _maintain(self) -> None:
        now = self._clock()
        if now - self._last_maintenance < self._terms.maintenance_seconds:
            return
        self._last_maintenance = now
        before = now - self._terms.retention_seconds
        try:
            if expired := await self._database.jobs.expire(now):
                log.info("%d queued jobs expired: their completion window ended", expired)
                JOBS_FINISHED.labels(JobState.EXPIRED.value).inc(expired)
            deleted = await self._database.jobs.delete_finished_before(before)
            await self._database.batches.delete_emptied_before(before)
            await self._database.files.delete_unused_before(before)
        except StoreUnavailable as error:
            log.warning("cannot expire or prune jobs: %s", error)
            return
        if deleted:
            log.info("deleted %d jobs finished more than %.0fs ago", deleted, self._terms.retention_seconds)

    async def _run_one(self, job: JobRecord) -> None:
        if job.attempts > self._terms.max_attempts:
            failure = JobFailure(
                "ATTEMPTS_EXHAUSTED", f"the job was taken {job.attempts - 1} times and never finished", 500
            )
            await self._finish(job, JobState.FAILED, error=encode_failure(failure))
            return
        generation = asyncio.create_task(self._generate(job, decode_work(job.request)))
        try:
            while not generation.done():
                await asyncio.wait({generation}, timeout=self._terms.heartbeat_seconds)
                if not generation.done() and not await self._still_held(job):
                    log.info("job %s was cancelled or taken by another runner: its generation stops", job.job_id)
                    generation.cancel()
                    return
            answer = generation.result()
        finally:
            if not generation.done():
                generation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await generation
        if isinstance(answer, JobOutcome):
            await self._finish(job, JobState.COMPLETED, result=encode_outcome(answer))
        else:
            await self._finish(job, JobState.FAILED, error=encode_failure(answer))

    async def _still_held(self, job: JobRecord) -> bool:
        try:
            return await self._database.jobs.heartbeat(
                job.job_id, self._terms.worker, self._clock(), self._terms.lease_seconds
            )
        except StoreUnavailable as error:
            # The lease runs on; if the store is back before it ends, nobody else took the job.
            log.warning("cannot extend the lease of job %s: %s", job.job_id, error)
            return True

    async def _generate(self, job: JobRecord, work: JobWork) -> JobOutcome | JobFailure:
        request = pb.GenerateRequest()
        request.CopyFrom(work.request)
        request.priority = job.priority
        deadline = time.monotonic() + self._terms.run_timeout_seconds
        delay = self._terms.retry_min_seconds
        while True:
            remaining = deadline - time.monotonic()
            try:
                messages = [message async for message in self._gateway.generate(request, remaining, job.identity)]
                return _outcome(work, messages)
            except MeshError as error:
                if error.kind not in _RETRIED_KINDS or remaining <= delay:
                    return JobFailure.of(error)
                JOBS_RETRIED.labels(error.reason).inc()
                if error.reason == PREEMPTED:
                    # Asked again at once: the scheduler holds the ask until the urgent work is done.
                    continue
                wait = max(delay, error.retry_after_seconds or 0.0)
                log.info("job %s: %s; trying again in %.1fs", job.job_id, error, wait)
                await asyncio.sleep(min(wait, max(remaining - 0.1, 0.0)))
                delay = min(delay * 2, self._terms.retry_max_seconds)

    async def _finish(self, job: JobRecord, state: JobState, result: str | None = None, error: str | None = None):
        """Stores the job's end, trying again while the store is down and the lease may still hold."""
        deadline = time.monotonic() + self._terms.lease_seconds
        while True:
            try:
                stored = await self._database.jobs.finish(
                    job.job_id, self._terms.worker, state, self._clock(), result=result, error=error
                )
                break
            except StoreUnavailable as unreachable:
                if time.monotonic() > deadline:
                    log.warning(
                        "job %s: its end could not be stored, and it will run again: %s", job.job_id, unreachable
                    )
                    return
                await asyncio.sleep(self._terms.retry_min_seconds)
        if stored:
            JOBS_FINISHED.labels(state.value).inc()
            log.info("job %s %s after %d attempt(s)", job.job_id, state.value.lower(), job.attempts)
        else:
            log.info("job %s ended here, but was cancelled or taken by another runner first", job.job_id)


def _outcome(work: JobWork, messages: list[pb.GenerateResponse]) -> JobOutcome:
    last = messages[-1] if messages else pb.GenerateResponse()
    text = "".join(message.text for message in messages)
    model = next((message.model for message in reversed(messages) if message.model), work.request.model)
    body = None
    if work.kind is not JobKind.GENERATE:
        writer = CompletionWriter(chat=work.kind is JobKind.CHAT_COMPLETIONS, prompt_chars=work.prompt_chars)
        for message in messages:
            writer.gather(message)
        body = writer.completed(work.with_logprobs)
    return JobOutcome(
        text=text,
        finish_reason=FINISH_REASONS.get(last.finish_reason, "stop"),
        model=model,
        input_tokens=last.usage.input_tokens,
        output_tokens=last.usage.output_tokens,
        body=body,
    )
