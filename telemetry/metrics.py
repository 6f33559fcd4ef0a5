"""Prometheus metrics shared by the services, and the /metrics endpoint each one serves.

Every process has its own registry (the default one): names are the same in every service, and
Prometheus tells the services apart by their scrape job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# Token latencies on a small CPU model are milliseconds; on a loaded GPU, seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)

RPC_REQUESTS = Counter(
    "meshserve_rpc_requests_total", "gRPC calls this service answered, by method and status code", ["method", "code"]
)
RPC_DURATION = Histogram(
    "meshserve_rpc_duration_seconds", "Time this service spent on each gRPC call", ["method"], buckets=_LATENCY_BUCKETS
)
TIME_TO_FIRST_TOKEN = Histogram(
    "meshserve_time_to_first_token_seconds", "From the request to its first token", ["model"], buckets=_LATENCY_BUCKETS
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "meshserve_time_per_output_token_seconds",
    "Mean time between output tokens after the first, per request",
    ["model"],
    buckets=_TOKEN_BUCKETS,
)
REQUEST_DURATION = Histogram(
    "meshserve_request_duration_seconds",
    "From the request to its last token or its failure",
    ["model", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter("meshserve_tokens_total", "Tokens processed, by model and kind (input or output)", ["model", "kind"])
SLOTS_IN_USE = Gauge("meshserve_slots_in_use", "Generation slots busy now", ["model"])
SLOTS_TOTAL = Gauge("meshserve_slots_total", "Generation slots in all", ["model"])
DECODE_STEPS = Counter(
    "meshserve_engine_decode_steps_total", "Decode steps the batched llama.cpp engine ran, by model", ["model"]
)
SEQUENCES_PER_STEP = Histogram(
    "meshserve_engine_sequences_per_step",
    "Sequences the batched llama.cpp engine decoded together in one step",
    ["model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256),
)


def serve_metrics(listen: str) -> None:
    """Serves /metrics on HOST:PORT from a background thread; an empty address turns it off."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
    log.info("serving Prometheus metrics on http://%s/metrics", listen)


@dataclass
class GenerationTimer:
    """One generation's timeline in monotonic seconds, recorded into the histograms once it ends."""

    model: str
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0

    def token_seen(self) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic()

    def finish(self, outcome: str) -> None:
        finished = time.monotonic()
        REQUEST_DURATION.labels(self.model, outcome).observe(finished - self.started)
        TOKENS.labels(self.model, "input").inc(self.input_tokens)
        TOKENS.labels(self.model, "output").inc(self.output_tokens)
        if self.first_token is None:
            return
        TIME_TO_FIRST_TOKEN.labels(self.model).observe(self.first_token - self.started)
        if self.output_tokens > 1:
            per_token = (finished - self.first_token) / (self.output_tokens - 1)
            TIME_PER_OUTPUT_TOKEN.labels(self.model).observe(per_token)
