"""A small client for the edge's server-sent events, recording when each event arrives."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass, field

from telemetry.spans import TRACE_ID_HEADER


@dataclass
class SseReply:
    status: int
    content_type: str
    events: list[dict] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    body: bytes = b""
    # The request's trace, which every service's log lines carry.
    trace_id: str = ""

    @property
    def text(self) -> str:
        return "".join(event.get("text", "") for event in self.events)


def post_generate(
    host: str,
    port: int,
    body: dict | bytes,
    tls_ca: str | None = None,
    timeout: float = 60,
    stop_after_events: int | None = None,
    headers: dict[str, str] | None = None,
) -> SseReply:
    """POSTs to /v1/generate and reads the reply; stops reading (and closes) after stop_after_events."""
    if tls_ca is None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        context = ssl.create_default_context(cafile=tls_ca)
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        connection.request("POST", "/v1/generate", payload, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        reply = SseReply(response.status, response.getheader("Content-Type", ""))
        reply.trace_id = response.getheader(TRACE_ID_HEADER, "")
        if response.status != 200 or not reply.content_type.startswith("text/event-stream"):
            reply.body = response.read()
            return reply
        buffer = b""
        while stop_after_events is None or len(reply.events) < stop_after_events:
            chunk = response.read1(65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if frame.startswith(b"data: "):
                    reply.events.append(json.loads(frame[len(b"data: ") :]))
                    reply.arrivals.append(time.monotonic())
        return reply
    finally:
        connection.close()


class OpenStream:
    """A /v1/generate stream held open until closed, as a slow or vanishing client would."""

    def __init__(self, host: str, port: int, body: dict, headers: dict[str, str] | None = None) -> None:
        self._connection = http.client.HTTPConnection(host, port, timeout=60)
        self._connection.request(
            "POST", "/v1/generate", json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        )
        self._response = self._connection.getresponse()
        self._buffer = b""

    def next_event(self) -> dict:
        while b"\n\n" not in self._buffer:
            chunk = self._response.read1(65536)
            if not chunk:
                raise EOFError("the stream ended")
            self._buffer += chunk
        frame, self._buffer = self._buffer.split(b"\n\n", 1)
        return json.loads(frame[len(b"data: ") :])

    def header(self, name: str) -> str:
        return self._response.getheader(name) or ""

    def close(self) -> None:
        self._connection.sock and self._connection.sock.close()
        self._connection.close()
