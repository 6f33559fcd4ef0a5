"""What a job asks for and what it answered, as the store keeps them: JSON text, written and read here only.

Pure: no I/O, no grpc. A job's work is a GenerateRequest for the gateway, plus how to shape its answer:
the native fields for /v1/async jobs, or the body OpenAI's endpoint would have answered for a Batch API line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from google.protobuf import json_format
from meshserve.gateway.v1 import gateway_pb2 as pb

from services.shared.errors import MeshError, http_status_of


class JobKind(StrEnum):
    """Which API the job came from, and so which answer it keeps."""

    GENERATE = "generate"
    CHAT_COMPLETIONS = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"


@dataclass(frozen=True)
class JobWork:
    kind: JobKind
    request: pb.GenerateRequest
    # OpenAI lines only: whether the answer carries logprobs, and where a text completion starts.
    with_logprobs: bool = False
    prompt_chars: int = 0


@dataclass(frozen=True)
class JobOutcome:
    """A completed job's answer: the native fields, and for OpenAI lines the body the endpoint answers."""

    text: str
    finish_reason: str
    model: str
    input_tokens: int
    output_tokens: int
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobFailure:
    """Why a job failed: the mesh's reason and message, and the HTTP status the same refusal would have had."""

    reason: str
    message: str
    status: int

    @classmethod
    def of(cls, error: MeshError) -> JobFailure:
        return cls(error.reason, error.message, http_status_of(error))


def encode_work(work: JobWork) -> str:
    request = json_format.MessageToDict(work.request, preserving_proto_field_name=True)
    fields = {
        "kind": work.kind.value,
        "request": request,
        "logprobs": work.with_logprobs,
        "prompt_chars": work.prompt_chars,
    }
    return _canonical(fields)


def decode_work(text: str) -> JobWork:
    fields = json.loads(text)
    request = json_format.ParseDict(fields["request"], pb.GenerateRequest())
    return JobWork(JobKind(fields["kind"]), request, bool(fields["logprobs"]), int(fields["prompt_chars"]))


def work_hash(*encoded: str) -> str:
    """What an idempotency key is compared by: the same work (and window) gives the same hash."""
    digest = hashlib.sha256()
    for part in encoded:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def encode_outcome(outcome: JobOutcome) -> str:
    return _canonical(outcome.__dict__)


def decode_outcome(text: str) -> JobOutcome:
    return JobOutcome(**json.loads(text))


def encode_failure(failure: JobFailure) -> str:
    return _canonical(failure.__dict__)


def decode_failure(text: str) -> JobFailure:
    try:
        return JobFailure(**json.loads(text))
    except (TypeError, ValueError):
        # Not written by encode_failure: kept as the message.
        return JobFailure("JOB_FAILED", text, 500)


def _canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))
