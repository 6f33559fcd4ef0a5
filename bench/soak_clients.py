"""The soak's clients, one per surface. Each sends one request and says how it ended, with the reason the mesh
gave: served, refused (the mesh said no, and why), failed (it started and broke, and the mesh said why), or
lost (no answer that says what happened to it). A soak passes only with nothing lost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.shared.status_details import ErrorDetails, details_of

MODEL = "gemma-3-270m"
PROMPT = "Once upon a time, in a small village by the sea,"
FINAL_JOB_STATES = {"JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
# Statuses a client is told to come back later with: a refusal, not a failure.
_REFUSALS = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class Outcome:
    surface: str
    priority: str
    kind: str  # served, refused, failed or lost
    reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Target:
    """Where the mesh under soak answers, and the credential every client sends."""

    http_port: int
    https_port: int
    ca: Path
    api_key: str
    state_dir: Path
    # Envoy's admin listener, where the soak reads how many connections Envoy holds; None: not read.
    edge_admin_port: int | None = None


class GrpcClient:
    surface = "grpc"

    def __init__(self, target: Target) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=target.ca.read_bytes())
        self._channel = grpc.secure_channel(f"localhost:{target.https_port}", credentials)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {target.api_key}"),)

    def send(self, priority: str, max_tokens: int) -> Outcome:
        request = pb.GenerateRequest(model=MODEL, prompt=PROMPT, max_tokens=max_tokens)
        request.priority = pb.Priority.Value(f"PRIORITY_{priority}")
        started = time.monotonic()
        finished, details = generate_to_the_end(self._stub, request, self._metadata, timeout=300)
        if details is not None:
            kind = "refused" if details.code in _REFUSALS and details.reason else "failed"
            return _ended(self.surface, priority, kind if details.reason else "lost", details.reason, started)
        return _ended(self.surface, priority, "served" if finished else "lost", "", started)

    def close(self) -> None:
        self._channel.close()


def generate_to_the_end(
    stub: gateway_pb2_grpc.GatewayServiceStub, request: pb.GenerateRequest, metadata: tuple, timeout: float
) -> tuple[bool, ErrorDetails | None]:
    """Streams one Generate until it ends: whether its final message came, and the error it ended with."""
    finished = False
    try:
        for message in stub.Generate(request, timeout=timeout, metadata=metadata):
            finished = finished or bool(message.finish_reason)
    except grpc.RpcError as error:
        return finished, details_of(error)
    return finished, None


class RestClient:
    surface = "rest"

    def __init__(self, target: Target) -> None:
        headers = {"authorization": f"Bearer {target.api_key}"}
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{target.http_port}", headers=headers, timeout=300)

    def send(self, priority: str, max_tokens: int) -> Outcome:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "priority": f"PRIORITY_{priority}"}
        started, final = time.monotonic(), None
        try:
            with self._http.stream("POST", "/v1/generate", json=body) as response:
                if response.status_code != 200:
                    return _refusal(
                        self.surface, priority, response.status_code, _rest_reason(response.read()), started
                    )
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line.removeprefix("data: "))
                        if event.get("finish_reason", "FINISH_REASON_UNSPECIFIED") != "FINISH_REASON_UNSPECIFIED":
                            final = event
        except httpx.HTTPError as error:
            return _ended(self.surface, priority, "lost", type(error).__name__, started)
        # The native REST stream ends without its final event when the generation failed after it began
        # (README, Errors): a failure the client can tell, so not lost.
        kind, reason = ("served", "") if final is not None else ("failed", "STREAM_ENDED_WITHOUT_FINISH")
        return _ended(self.surface, priority, kind, reason, started)

    def close(self) -> None:
        self._http.close()


class OpenAIClient:
    surface = "openai"

    def __init__(self, target: Target) -> None:
        self._client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{target.http_port}/v1", api_key=target.api_key, max_retries=0, timeout=300
        )

    def send(self, priority: str, max_tokens: int) -> Outcome:
        started, finished = time.monotonic(), False
        try:
            stream = self._client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, stream=True,
                extra_headers={"x-meshserve-priority": priority.lower()},
            )  # fmt: skip
            for chunk in stream:
                finished = finished or any(choice.finish_reason for choice in chunk.choices)
        except openai.APIStatusError as error:
            code = (error.body or {}).get("code", "") if isinstance(error.body, dict) else ""
            return _refusal(self.surface, priority, error.status_code, str(code or "").upper(), started)
        except openai.APIError as error:
            # A stream that breaks after it began carries an error event, with the mesh's reason as its code.
            reason = str(error.code or "").upper() or error.message
            return _ended(self.surface, priority, "failed" if reason else "lost", reason, started)
        return _ended(self.surface, priority, "served" if finished else "lost", "", started)

    def close(self) -> None:
        self._client.close()


class JobsClient:
    """Submits a job; the soak polls every accepted job at the end, and one that never ends is lost."""

    surface = "jobs"

    def __init__(self, target: Target) -> None:
        headers = {"authorization": f"Bearer {target.api_key}"}
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{target.http_port}", headers=headers, timeout=60)
        self.accepted: list[tuple[str, str, float]] = []

    def send(self, priority: str, max_tokens: int) -> Outcome | None:
        # The body is the GenerateRequest itself (jobs.proto binds `request` to the body).
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "priority": f"PRIORITY_{priority}"}
        started = time.monotonic()
        try:
            reply = self._http.post("/v1/async/submit", json=body)
        except httpx.HTTPError as error:
            return _ended(self.surface, priority, "lost", type(error).__name__, started)
        if reply.status_code != 200:
            return _refusal(self.surface, priority, reply.status_code, _rest_reason(reply.content), started)
        self.accepted.append((reply.json()["task_id"], priority, started))
        return None

    def settle(self, within: float) -> list[Outcome]:
        """Every accepted job's end: completed is served; a job still unfinished after `within` is lost."""
        outcomes, deadline = [], time.monotonic() + within
        for task_id, priority, started in self.accepted:
            state = ""
            while time.monotonic() < deadline:
                reply = self._http.get(f"/v1/async/status/{task_id}")
                state = reply.json().get("job", {}).get("state", "") if reply.status_code == 200 else ""
                if state in FINAL_JOB_STATES:
                    break
                time.sleep(0.2)
            if state == "JOB_STATE_COMPLETED":
                outcomes.append(_ended(self.surface, priority, "served", "", started))
            elif state in FINAL_JOB_STATES:
                outcomes.append(_ended(self.surface, priority, "failed", state, started))
            else:
                outcomes.append(_ended(self.surface, priority, "lost", state or "NO_STATE", started))
        self.accepted.clear()
        return outcomes

    def close(self) -> None:
        self._http.close()


def _rest_reason(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    details = document.get("details") or [{}]
    return str(details[0].get("reason", "")) if isinstance(details[0], dict) else ""


def _refusal(surface: str, priority: str, status: int, reason: str, started: float) -> Outcome:
    if not reason:
        return _ended(surface, priority, "lost", f"HTTP {status} without a reason", started)
    kind = "refused" if status in (429, 503, 504) else "failed"
    return _ended(surface, priority, kind, reason, started)


def _ended(surface: str, priority: str, kind: str, reason: str, started: float) -> Outcome:
    return Outcome(surface, priority, kind, reason, time.monotonic() - started)
