"""One generation request asked the same way over each of the edge's surfaces, and its answer read into one
shape: native REST (`/v1/generate`), the OpenAI API through the official SDK, and gRPC through the edge."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import grpc
import httpx
import openai
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.shared.status_details import details_of
from tests.e2e.conftest import Mesh

SURFACES = ("rest", "openai", "grpc")
MODEL = "gemma-3-270m"
TRACE_ID = "x-meshserve-trace-id"
PRIORITY_HEADER = "x-meshserve-priority"
RATE_LIMIT_PREFIX = "x-ratelimit-"
# The HTTP status each surface's refusal corresponds to.
_HTTP_OF_CODE = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAVAILABLE: 503,
}


@dataclass
class Answer:
    surface: str
    status: int
    reason: str = ""
    trace_id: str = ""
    # Prompt plus completion tokens of a served request.
    tokens: int = 0
    retry_after_seconds: float | None = None
    # The x-ratelimit-* values: HTTP headers, or the gRPC refusal's ErrorInfo metadata.
    rate_limits: dict[str, str] = field(default_factory=dict)
    # ErrorInfo metadata on REST and gRPC; OpenAI's envelope carries none.
    metadata: dict[str, str] = field(default_factory=dict)


def ask(mesh: Mesh, surface: str, headers: dict[str, str], *, prompt: str = "Hi", max_tokens: int = 2,
        priority: str | None = None) -> Answer:  # fmt: skip
    """`headers` carry the credential (authorization or x-api-key) and whatever else the client sends;
    `priority` is a name (LOW ... CRITICAL), sent the way the surface takes it."""
    if surface == "rest":
        return _rest(mesh, headers, prompt, max_tokens, priority)
    if surface == "openai":
        return _openai(mesh, headers, prompt, max_tokens, priority)
    return _grpc(mesh, headers, prompt, max_tokens, priority)


def _rest(mesh: Mesh, headers: dict[str, str], prompt: str, max_tokens: int, priority: str | None) -> Answer:
    body = {"prompt": prompt, "max_tokens": max_tokens, **({"priority": f"PRIORITY_{priority}"} if priority else {})}
    reply = httpx.post(f"{mesh.http}/v1/generate", json=body, headers=headers, timeout=120)
    trace_id = reply.headers.get(TRACE_ID, "")
    if reply.status_code != 200:
        info = reply.json()["details"][0]
        retry = reply.headers.get("retry-after")
        return Answer("rest", reply.status_code, info["reason"], trace_id,
                      retry_after_seconds=float(retry) if retry else None, rate_limits=_limits(reply.headers),
                      metadata=info.get("metadata", {}))  # fmt: skip
    events = [json.loads(line[len("data: ") :]) for line in reply.text.splitlines() if line.startswith("data: ")]
    usage = events[-1]["usage"]
    return Answer("rest", 200, trace_id=trace_id, tokens=usage["input_tokens"] + usage["output_tokens"])


def _openai(mesh: Mesh, headers: dict[str, str], prompt: str, max_tokens: int, priority: str | None) -> Answer:
    sent = {key.lower(): value for key, value in headers.items()}
    credential = sent.pop("authorization", "").removeprefix("Bearer ")
    if priority:
        sent[PRIORITY_HEADER] = priority.lower()
    client = openai.OpenAI(base_url=f"{mesh.http}/v1", api_key=credential or "unused", max_retries=0, timeout=120,
                           default_headers=sent)  # fmt: skip
    # The SDK sends its api_key as a bearer token and needs one to start; a request that sends its key as
    # x-api-key gets a placeholder and omits the header.
    omitted = {} if credential else {"Authorization": openai.Omit()}
    try:
        raw = client.completions.with_raw_response.create(
            model=MODEL, prompt=prompt, max_tokens=max_tokens, extra_headers=omitted
        )
    except openai.APIStatusError as error:
        retry = error.response.headers.get("retry-after")
        return Answer("openai", error.status_code, (error.code or "").upper(), error.response.headers.get(TRACE_ID, ""),
                      retry_after_seconds=float(retry) if retry else None,
                      rate_limits=_limits(error.response.headers))  # fmt: skip
    return Answer("openai", 200, trace_id=raw.headers[TRACE_ID], tokens=raw.parse().usage.total_tokens)


def _grpc(mesh: Mesh, headers: dict[str, str], prompt: str, max_tokens: int, priority: str | None) -> Answer:
    request = pb.GenerateRequest(prompt=prompt, max_tokens=max_tokens)
    if priority:
        request.priority = pb.Priority.Value(f"PRIORITY_{priority}")
    metadata = tuple((key.lower(), value) for key, value in headers.items())
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        call = gateway_pb2_grpc.GatewayServiceStub(channel).Generate(request, timeout=120, metadata=metadata)
        try:
            replies = list(call)
        except grpc.RpcError as error:
            details = details_of(error)
            trace_id = dict(error.initial_metadata() or ()).get(TRACE_ID, "")
            return Answer("grpc", _HTTP_OF_CODE.get(error.code(), 500), details.reason or "", trace_id,
                          retry_after_seconds=details.retry_after_seconds, rate_limits=_limits(details.metadata),
                          metadata=dict(details.metadata))  # fmt: skip
        usage = replies[-1].usage
        return Answer("grpc", 200, trace_id=dict(call.initial_metadata())[TRACE_ID],
                      tokens=usage.input_tokens + usage.output_tokens)  # fmt: skip


def _limits(headers) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items() if key.lower().startswith(RATE_LIMIT_PREFIX)}
