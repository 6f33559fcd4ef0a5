"""One client per system under test. Each streams one completion and times every token as it arrives.

All are synchronous and safe to call from many threads at once: concurrency is a thread per client.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from contextlib import aclosing
from pathlib import Path

import grpc
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2 as spb
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from bench.burst import LedgerUse
from bench.workload import CUT, OK, PROMPT, SEED, Measurement
from services.inference.engines.llama_cpp import LlamaCppEngine
from services.shared.domain import GenerationRequest, SamplingParams
from services.shared.mesh_config import ModelConfig
from services.shared.status_details import details_of
from services.shared.tls import TlsFiles, channel_credentials

TOP_P = 0.95
# The model the benchmark's mesh serves (deploy/meshserve.toml), named as OpenAI clients must name it.
MODEL = "gemma-3-270m"


class FloorClient:
    """The engine alone, in this process: the same llama.cpp engine and slots the mesh runs, no network."""

    name = "engine in-process"

    def __init__(self, config: ModelConfig) -> None:
        self._engine = LlamaCppEngine(config)
        self._engine.load()
        self._loop = asyncio.new_event_loop()
        self._slots = asyncio.Semaphore(config.slots)
        threading.Thread(target=self._loop.run_forever, daemon=True, name="floor-loop").start()

    def stream(
        self, max_tokens: int, priority: str = "NORMAL", deadline: float | None = None, until: float | None = None
    ) -> Measurement:
        future = asyncio.run_coroutine_threadsafe(self._generate(max_tokens, until), self._loop)
        return future.result(timeout=deadline)

    async def _generate(self, max_tokens: int, until: float | None) -> Measurement:
        result = _sent()
        request = GenerationRequest(SamplingParams(max_tokens, 0.0, TOP_P, SEED), prompt=PROMPT)
        async with self._slots:
            prompt = await self._engine.prepare(request)
            # Closed as the mesh's inference service closes it when a client cancels: the sequence leaves.
            async with aclosing(self._engine.generate(request, prompt)) as chunks:
                async for chunk in chunks:
                    _token(result, len(chunk.token_ids))
                    if chunk.usage is not None:
                        result.tokens = chunk.usage.output_tokens
                    if _cut(result, until):
                        break
        result.total = time.monotonic() - result.sent_at
        return result


class MeshGrpcClient:
    """meshserve through the TLS edge with generated gRPC stubs."""

    name = "meshserve gRPC"

    def __init__(self, https_port: int, ca: Path, api_key: str) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        self._channel = grpc.secure_channel(f"localhost:{https_port}", credentials)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),)

    def stream(
        self, max_tokens: int, priority: str = "NORMAL", deadline: float | None = None, until: float | None = None
    ) -> Measurement:
        request = pb.GenerateRequest(prompt=PROMPT, max_tokens=max_tokens, temperature=0.0, top_p=TOP_P, seed=SEED)
        request.priority = pb.Priority.Value(f"PRIORITY_{priority}")
        result = _sent()
        call = self._stub.Generate(request, timeout=deadline, metadata=self._metadata)
        try:
            for message in call:
                _token(result, message.token_count)
                if message.finish_reason:
                    result.tokens = message.usage.output_tokens
                if _cut(result, until):
                    call.cancel()
                    break
        except grpc.RpcError as error:
            details = details_of(error)
            result.status = f"{details.code.name}:{details.reason}" if details.reason else details.code.name
        result.total = time.monotonic() - result.sent_at
        return result


class MeshRestClient:
    """meshserve through the edge's REST listener, reading server-sent events."""

    name = "meshserve REST+SSE"

    def __init__(self, http_port: int, api_key: str) -> None:
        self._port = http_port
        self._headers = {"authorization": f"Bearer {api_key}"}

    def stream(
        self, max_tokens: int, priority: str = "NORMAL", deadline: float | None = None, until: float | None = None
    ) -> Measurement:
        body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0, "top_p": TOP_P, "seed": SEED,
                "priority": f"PRIORITY_{priority}"}  # fmt: skip
        return _sse(self._port, "/v1/generate", body, deadline, until, _mesh_event, self._headers)


class MeshOpenAIClient:
    """meshserve's OpenAI API on the edge's plain listener: streaming completions, as the peers are called."""

    def __init__(self, http_port: int, api_key: str, model: str = MODEL, name: str = "meshserve OpenAI") -> None:
        self.name = name
        self._port = http_port
        self._model = model
        self._headers = {"authorization": f"Bearer {api_key}"}

    def stream(
        self, max_tokens: int, priority: str = "NORMAL", deadline: float | None = None, until: float | None = None
    ) -> Measurement:
        headers = {**self._headers, "x-meshserve-priority": priority.lower()}
        body = _completion(self._model, max_tokens)
        return _sse(self._port, "/v1/completions", body, deadline, until, _openai_event, headers)


class PeerClient:
    """A peer's OpenAI-compatible server, called as its users call it: streaming completions."""

    def __init__(self, port: int, name: str = "llama_cpp.server", model: str = MODEL) -> None:
        self.name = name
        self._port = port
        self._model = model

    def stream(
        self, max_tokens: int, priority: str = "NORMAL", deadline: float | None = None, until: float | None = None
    ) -> Measurement:
        body = _completion(self._model, max_tokens)
        return _sse(self._port, "/v1/completions", body, deadline, until, _openai_event)


def _completion(model: str, max_tokens: int) -> dict:
    """The same streaming completion for meshserve's OpenAI API and every peer's, usage included."""
    return {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0, "top_p": TOP_P,
            "seed": SEED, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip


def _sent() -> Measurement:
    return Measurement(sent_at=time.monotonic())


def _cut(result: Measurement, until: float | None) -> bool:
    """Past the end of the caller's window: the stream is cut there (its client then cancels it)."""
    if until is None or result.status != OK or time.monotonic() < until:
        return False
    result.status = CUT
    return True


def _token(result: Measurement, count: int) -> None:
    if count <= 0:
        return
    now = time.monotonic() - result.sent_at
    if result.first_token is None:
        result.first_token = now
    # Tokens that came in one message arrived together.
    result.token_times.extend([now] * count)


def _mesh_event(result: Measurement, event: dict) -> None:
    _token(result, event.get("token_count", 0))
    if "usage" in event:
        result.tokens = event["usage"]["output_tokens"]


def _openai_event(result: Measurement, event: dict) -> None:
    if event.get("usage"):
        result.tokens = event["usage"]["completion_tokens"]
    elif "error" in event:
        result.status = event["error"].get("code") or "stream error"
    elif event["choices"] and (event["choices"][0]["text"] or not event["choices"][0].get("finish_reason")):
        # An event is a token here: the peers stream one an event, text or not (a token that is part of a
        # character has none yet); meshserve may carry several in one, which the summary weighs by usage.
        # A last event with no text and a finish reason carries none.
        _token(result, 1)
        # A server that reports no usage (llama_cpp.server) has streamed a token an event.
        result.tokens = max(result.tokens, len(result.token_times))


def _sse(
    port: int, path: str, body: dict, deadline: float | None, until: float | None, on_event, headers: dict | None = None
) -> Measurement:
    result = _sent()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=deadline or 300)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        if response.status != 200:
            result.status = f"HTTP {response.status}"
            response.read()
            return result
        for line in response:
            if deadline is not None and time.monotonic() - result.sent_at > deadline:
                result.status = "DEADLINE_EXCEEDED"
                break
            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                on_event(result, json.loads(line[len(b"data: ") :]))
            if _cut(result, until):
                break  # closing the connection, below, is the cancel
    except (OSError, http.client.HTTPException) as error:
        result.status = type(error).__name__
    finally:
        connection.close()
        result.total = time.monotonic() - result.sent_at
    return result


class LedgerReader:
    """The scheduler's ledger of its first device, read with the command-line client's identity."""

    def __init__(self, scheduler_port: int, tls: TlsFiles) -> None:
        self._channel = grpc.secure_channel(f"127.0.0.1:{scheduler_port}", channel_credentials(tls))
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)

    def __call__(self) -> LedgerUse:
        state = self._stub.GetSchedulerState(spb.GetSchedulerStateRequest(), timeout=5)
        device = state.devices[0]
        return LedgerUse(device.capacity_bytes, device.reserved_bytes, device.peak_reserved_bytes)

    def close(self) -> None:
        self._channel.close()
