"""The store's jobs and batches as meshserve.jobs.v1 messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from meshserve.gateway.v1 import gateway_pb2 as gateway_pb
from meshserve.jobs.v1 import jobs_pb2 as pb

from gateway.jobs.desk import BatchView
from gateway.jobs.work import decode_failure, decode_outcome, decode_work
from services.store import JobRecord, JobState

_STATES = {state: pb.JobState.Value(f"JOB_STATE_{state.value}") for state in JobState}
_FINISH_REASONS = {"stop": gateway_pb.FINISH_REASON_STOP, "length": gateway_pb.FINISH_REASON_LENGTH}


def job_state(state: str) -> pb.JobState:
    return _STATES[JobState(state)]


def to_job(job: JobRecord, position: int | None = None) -> pb.Job:
    message = pb.Job(
        task_id=job.job_id,
        state=job_state(job.state),
        model=decode_work(job.request).request.model,
        priority=job.priority,
        created_at=_timestamp(job.created_at),
        position=position or 0,
        attempts=job.attempts,
        batch_id=job.batch_id or "",
        custom_id=job.custom_id or "",
    )
    if job.finished_at is not None:
        message.finished_at.CopyFrom(_timestamp(job.finished_at))
    if job.expires_at is not None:
        message.expires_at.CopyFrom(_timestamp(job.expires_at))
    if job.state == JobState.FAILED and job.error:
        message.error.CopyFrom(_error(job.error))
    return message


def to_result(job: JobRecord) -> pb.JobResult:
    result = pb.JobResult(task_id=job.job_id, state=job_state(job.state))
    if job.state == JobState.COMPLETED and job.result:
        outcome = decode_outcome(job.result)
        result.text, result.model = outcome.text, outcome.model
        result.finish_reason = _FINISH_REASONS.get(outcome.finish_reason, gateway_pb.FINISH_REASON_STOP)
        result.usage.input_tokens, result.usage.output_tokens = outcome.input_tokens, outcome.output_tokens
    if job.state == JobState.FAILED and job.error:
        result.error.CopyFrom(_error(job.error))
    return result


def to_batch_status(view: BatchView) -> pb.BatchStatus:
    counts = view.counts
    return pb.BatchStatus(
        batch_id=view.batch.batch_id,
        total=view.batch.total,
        queued=counts[JobState.QUEUED],
        running=counts[JobState.RUNNING],
        completed=counts[JobState.COMPLETED],
        failed=counts[JobState.FAILED],
        cancelled=counts[JobState.CANCELLED],
        expired=counts[JobState.EXPIRED],
        progress_percent=round(view.progress_percent, 2),
        created_at=_timestamp(view.batch.created_at),
    )


def _error(stored: str) -> pb.JobError:
    failure = decode_failure(stored)
    return pb.JobError(reason=failure.reason, message=failure.message)


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
