"""OpenAI's Batch API as the job desk's batches: input lines in, the batch object and output lines out.

Pure: no I/O. An input file is JSONL, one request a line: {"custom_id", "method": "POST", "url", "body"}.
Every line is checked as the endpoint would check it before anything is stored, so a bad line refuses the
whole batch with its line number. A model the mesh does not serve is found when the line runs: that line
fails, in the error file, and the others go on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from gateway.jobs.desk import BatchView
from gateway.jobs.work import JobFailure, JobKind, JobWork, decode_failure, decode_outcome
from gateway.openai.errors import OpenAIError, bad_request, from_validation_errors, openai_code
from gateway.openai.schema import ChatCompletionRequest, CompletionRequest
from gateway.openai.translate import chat_request, completion_request
from services.store import JobRecord, JobState

ENDPOINTS = {"/v1/chat/completions": JobKind.CHAT_COMPLETIONS, "/v1/completions": JobKind.COMPLETIONS}
_WINDOW = re.compile(r"^(\d+)(h|m|s)$")
_WINDOW_UNITS = {"h": 3600, "m": 60, "s": 1}
_OUTPUT_SUFFIX, _ERRORS_SUFFIX = "-output", "-errors"
# The error types OpenAI names for the statuses a line can fail with.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 409: "invalid_request_error", 429: "rate_limit_error",
                503: "service_unavailable_error", 504: "timeout_error"}  # fmt: skip
_UNFINISHED = {
    JobState.CANCELLED: ("batch_cancelled", "the batch was cancelled before this request ran"),
    JobState.EXPIRED: ("batch_expired", "the batch's completion window ended before this request ran"),
}


def window_seconds(window: str) -> int:
    """ "24h" (OpenAI's only window), or any whole number of hours, minutes or seconds."""
    match = _WINDOW.match(window.strip())
    if match is None or int(match[1]) == 0:
        raise bad_request(f"completion_window must be like 24h, 30m or 600s, not {window!r}", "completion_window")
    return int(match[1]) * _WINDOW_UNITS[match[2]]


def parse_input(content: bytes, endpoint: str, priority: int) -> list[tuple[str, JobWork]]:
    """The lines of an input file as (custom_id, work); OpenAIError(400) naming the first bad line."""
    kind = ENDPOINTS.get(endpoint)
    if kind is None:
        raise bad_request(f"endpoint must be one of {', '.join(ENDPOINTS)}, not {endpoint!r}", "endpoint")
    try:
        text = content.decode()
    except UnicodeDecodeError:
        raise bad_request("the input file is not UTF-8 text", "input_file_id") from None
    lines, seen = [], set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        custom_id, work = _parse_line(raw, number, endpoint, kind, priority)
        if custom_id in seen:
            raise bad_request(f"line {number}: custom_id {custom_id!r} is used twice", "input_file_id")
        seen.add(custom_id)
        lines.append((custom_id, work))
    if not lines:
        raise bad_request("the input file has no requests", "input_file_id")
    return lines


def _parse_line(raw: str, number: int, endpoint: str, kind: JobKind, priority: int) -> tuple[str, JobWork]:
    try:
        line = json.loads(raw)
    except json.JSONDecodeError as error:
        raise bad_request(f"line {number} is not JSON: {error}", "input_file_id") from None
    if not isinstance(line, dict):
        raise bad_request(f"line {number} is not a JSON object", "input_file_id")
    custom_id, body = line.get("custom_id"), line.get("body")
    if not isinstance(custom_id, str) or not custom_id:
        raise bad_request(f"line {number}: custom_id must be a non-empty string", "input_file_id")
    if line.get("method", "POST") != "POST" or line.get("url") != endpoint:
        raise bad_request(f"line {number}: every line must be POST {endpoint}, as the batch", "input_file_id")
    if not isinstance(body, dict):
        raise bad_request(f"line {number}: body must be a JSON object", "input_file_id")
    try:
        return custom_id, _work(kind, body, priority)
    except ValidationError as error:
        refusal = from_validation_errors(list(error.errors()))
        raise bad_request(f"line {number}: {refusal.message}", "input_file_id") from None
    except OpenAIError as error:
        raise bad_request(f"line {number}: {error.message}", "input_file_id") from None


def _work(kind: JobKind, body: dict[str, Any], priority: int) -> JobWork:
    if body.get("stream"):
        raise bad_request("a batch request cannot stream", "stream")
    if kind is JobKind.CHAT_COMPLETIONS:
        chat = ChatCompletionRequest.model_validate(body)
        return JobWork(kind, chat_request(chat, priority).request, with_logprobs=chat.logprobs)
    completion = CompletionRequest.model_validate(body)
    translated = completion_request(completion, priority)
    return JobWork(kind, translated.request, completion.logprobs is not None, len(translated.request.prompt))


def output_file_id(batch_id: str) -> str:
    return f"file-{batch_id}{_OUTPUT_SUFFIX}"


def errors_file_id(batch_id: str) -> str:
    return f"file-{batch_id}{_ERRORS_SUFFIX}"


def batch_of_file(file_id: str) -> tuple[str, bool] | None:
    """(batch id, whether it is the output rather than the error file) for a batch's own file id."""
    for suffix, is_output in ((_OUTPUT_SUFFIX, True), (_ERRORS_SUFFIX, False)):
        if file_id.startswith("file-batch_") and file_id.endswith(suffix):
            return file_id.removeprefix("file-").removesuffix(suffix), is_output
    return None


def batch_object(view: BatchView) -> dict[str, Any]:
    batch, counts = view.batch, view.counts
    ended = counts[JobState.QUEUED] + counts[JobState.RUNNING] == 0
    errors = counts[JobState.FAILED] + counts[JobState.CANCELLED] + counts[JobState.EXPIRED]
    ended_at = _whole(view.last_finished_at) if ended else None
    status = "in_progress"
    if batch.cancelled_at is not None:
        status = "cancelled" if ended else "cancelling"
    elif ended:
        status = "expired" if counts[JobState.EXPIRED] else "completed"
    return {
        "id": batch.batch_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": None,
        "input_file_id": batch.input_file_id,
        "completion_window": _window_text(batch.expires_at - batch.created_at if batch.expires_at else 0),
        "status": status,
        "output_file_id": output_file_id(batch.batch_id) if ended and counts[JobState.COMPLETED] else None,
        "error_file_id": errors_file_id(batch.batch_id) if ended and errors else None,
        "created_at": _whole(batch.created_at),
        "in_progress_at": _whole(batch.created_at),
        "expires_at": _whole(batch.expires_at),
        "finalizing_at": ended_at,
        "completed_at": ended_at if status == "completed" else None,
        "failed_at": None,
        "expired_at": ended_at if status == "expired" else None,
        "cancelling_at": _whole(batch.cancelled_at),
        "cancelled_at": ended_at if status == "cancelled" else None,
        "request_counts": {"total": batch.total, "completed": counts[JobState.COMPLETED], "failed": errors},
        "metadata": json.loads(batch.metadata) if batch.metadata else None,
    }


def _window_text(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}h" if whole % 3600 == 0 else f"{whole}s"


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds)


def output_lines(lines: list[JobRecord], want_output: bool) -> bytes:
    """The output file (completed lines) or the error file (the rest that ended), as JSONL."""
    chosen = []
    for job in lines:
        if job.state == JobState.COMPLETED and want_output:
            body = decode_outcome(job.result or "{}").body
            chosen.append(_line(job, 200, body))
        elif job.state == JobState.FAILED and not want_output:
            failure = decode_failure(job.error or "")
            chosen.append(_line(job, failure.status, _envelope(failure)))
        elif job.state in _UNFINISHED and not want_output:
            code, message = _UNFINISHED[JobState(job.state)]
            chosen.append({"id": _request_id(job), "custom_id": job.custom_id, "response": None,
                           "error": {"code": code, "message": message}})  # fmt: skip
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in chosen)


def _line(job: JobRecord, status: int, body: dict[str, Any] | None) -> dict[str, Any]:
    response = {"status_code": status, "request_id": job.job_id, "body": body}
    return {"id": _request_id(job), "custom_id": job.custom_id, "response": response, "error": None}


def _request_id(job: JobRecord) -> str:
    return f"batch_req_{job.job_id.removeprefix('job_')}"


def _envelope(failure: JobFailure) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(failure.status, "server_error")
    return {"error": {"message": failure.message, "type": kind, "param": None, "code": openai_code(failure.reason)}}
