"""Clients of the mesh's OpenAI surface for the e2e tests: the official SDK, and raw HTTP for exact framing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import openai

from tests.e2e.conftest import Mesh

MODEL = "gemma-3-270m"
# A prompt the default base model continues sensibly.
STORY = "Once upon a time, in a small village by the sea,"


def sdk(mesh: Mesh) -> openai.OpenAI:
    # No retries: a test must see the mesh's first answer, not the SDK's second try.
    return openai.OpenAI(base_url=f"{mesh.http}/v1", api_key=mesh.api_key, max_retries=0, timeout=120)


def async_sdk(mesh: Mesh) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{mesh.http}/v1", api_key=mesh.api_key, max_retries=0, timeout=120)


@dataclass
class RawStream:
    status: int
    headers: httpx.Headers
    # Every `data:` payload in order: parsed JSON, or the string "[DONE]".
    events: list = field(default_factory=list)
    body: bytes = b""


def raw_post(mesh: Mesh, path: str, body: dict | bytes, headers: dict | None = None, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"content-type": "application/json", **mesh.auth, **(headers or {})}
    return httpx.post(f"{mesh.http}{path}", content=content, headers=sent, timeout=120, **kwargs)


def raw_stream(mesh: Mesh, path: str, body: dict, on_first_event=None) -> RawStream:
    """Reads a whole server-sent event stream; `on_first_event()` runs once the first event is in."""
    with httpx.stream("POST", f"{mesh.http}{path}", json=body, headers=mesh.auth, timeout=120) as response:
        reply = RawStream(response.status_code, response.headers)
        if response.status_code != 200:
            reply.body = response.read()
            return reply
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            payload = line.removeprefix("data: ")
            reply.events.append(payload if payload == "[DONE]" else json.loads(payload))
            if len(reply.events) == 1 and on_first_event is not None:
                on_first_event()
    return reply
