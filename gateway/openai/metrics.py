"""The OpenAI front's own metrics; token and latency metrics per model are the gateway's."""

from __future__ import annotations

from prometheus_client import Counter

OPENAI_REQUESTS = Counter(
    "meshserve_openai_requests_total",
    "OpenAI API requests answered, by endpoint and HTTP status (the status a stream started with)",
    ["endpoint", "status"],
)
OPENAI_STREAM_ERRORS = Counter(
    "meshserve_openai_stream_errors_total",
    "Streams that failed after they began and ended with an error event, by error code",
    ["endpoint", "code"],
)
