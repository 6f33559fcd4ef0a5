"""The fault matrix: each of the mesh's processes killed (SIGKILL) and hung (SIGSTOP) under load.

Workers stream completions through the edge, each with a deadline, so that no client waits forever. One
process is signalled; a hung one is let go (SIGCONT) after HANG_SECONDS. For each fault the matrix says:
- how long until every request in flight when it struck had an answer;
- how many requests were refused or failed from then until the mesh recovered, and with which reasons;
- how long until it recovered: from the fault until the first request of the run that every later request
  was served in;
- whether every request sent afterwards was served.

`python -m bench.faults` (make faults) runs it on its own mesh and writes bench/results/faults.json and the
README's table; tests/e2e/test_fault_matrix.py runs the same faults within `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from bench.processes import REPO_ROOT, roles_of, start_mesh
from bench.soak_clients import MODEL, PROMPT, generate_to_the_end

# Every request's own deadline: the longest any client can wait, whatever hangs.
REQUEST_DEADLINE_SECONDS = 20.0
HANG_SECONDS = 5.0
RECOVERY_WITHIN_SECONDS = 120.0
# Served in a row, after the fault, for the mesh to count as recovered.
RECOVERED_AFTER_SERVED = 6
REQUESTS_AFTERWARDS = 6
# The client's own pings: a hung edge is noticed within about two seconds, not at the deadline.
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGSTOP": signal.SIGSTOP}
# The processes the matrix signals, by role; every replica of each is signalled in turn.
MATRIX_ROLES = ("envoy", "gateway", "scheduler", "gpu-monitor", "inference")


@dataclass(frozen=True)
class Attempt:
    sent_at: float
    answered_at: float
    served: bool
    reason: str = ""


@dataclass
class FaultResult:
    process: str
    signal: str
    in_flight: int
    answered_within_seconds: float
    refused_in_window: int
    reasons: dict[str, int]
    recovered_after_seconds: float | None
    served_afterwards: int
    sent_afterwards: int

    @property
    def recovered(self) -> bool:
        return self.recovered_after_seconds is not None and self.served_afterwards == self.sent_afterwards


@dataclass
class Load:
    """Workers streaming one request after another through the edge's plain listener, over gRPC."""

    http_port: int
    api_key: str
    workers: int = 2
    max_tokens: int = 24
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # When each worker sent the request it waits on now; None between requests.
        self.sending: dict[int, float | None] = {}

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_DEADLINE_SECONDS + 10)

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self.attempts)

    def _work(self, worker: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.http_port}", options=_CHANNEL_OPTIONS) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            while not self._stop.is_set():
                self.sending[worker] = time.monotonic()
                attempt = one_request(stub, self.api_key, self.max_tokens)
                self.sending[worker] = None
                with self._lock:
                    self.attempts.append(attempt)
                if not attempt.served:
                    # A refused client waits a little before it asks again, as a client told to back off does.
                    time.sleep(0.2)


def one_request(stub: gateway_pb2_grpc.GatewayServiceStub, api_key: str, max_tokens: int) -> Attempt:
    request = pb.GenerateRequest(model=MODEL, prompt=PROMPT, max_tokens=max_tokens)
    metadata = (("authorization", f"Bearer {api_key}"),)
    sent = time.monotonic()
    finished, details = generate_to_the_end(stub, request, metadata, timeout=REQUEST_DEADLINE_SECONDS)
    if details is not None:
        return Attempt(sent, time.monotonic(), False, f"{details.code.name}:{details.reason or 'no reason'}")
    return Attempt(sent, time.monotonic(), finished, "" if finished else "ENDED_WITHOUT_FINISH")


def inject(state_dir: Path, process: str, signal_name: str, load: Load) -> FaultResult:
    """One fault under `load`, which must be running; waits until the mesh has recovered, or gives up."""
    pid = roles_of(state_dir)[process]
    until_in_flight(load)
    struck = time.monotonic()
    os.kill(pid, SIGNALS[signal_name])
    if signal_name == "SIGSTOP":
        time.sleep(HANG_SECONDS)
        os.kill(pid, signal.SIGCONT)
    recovered_at = _wait_for_recovery(load, struck)
    load.stop()
    afterwards = _requests_afterwards(load)
    load.start()
    return _result(process, signal_name, struck, recovered_at, load.snapshot(), afterwards)


def until_in_flight(load: Load, streaming_for: float = 0.3) -> None:
    """Until every worker's request has been under way for `streaming_for`: the fault strikes mid-stream."""
    deadline = time.monotonic() + RECOVERY_WITHIN_SECONDS
    while time.monotonic() < deadline:
        now = time.monotonic()
        started = [load.sending.get(worker) for worker in range(load.workers)]
        if all(sent is not None and now - sent >= streaming_for for sent in started):
            return
        time.sleep(0.02)


def _wait_for_recovery(load: Load, struck: float) -> float | None:
    deadline = time.monotonic() + RECOVERY_WITHIN_SECONDS
    while time.monotonic() < deadline:
        recovered_at = _recovery_time(load.snapshot(), struck)
        if recovered_at is not None:
            return recovered_at
        time.sleep(0.1)
    return None


def _recovery_time(attempts: list[Attempt], struck: float) -> float | None:
    """When the trailing run of served requests began, if it holds RECOVERED_AFTER_SERVED sent after the fault."""
    after = sorted((a for a in attempts if a.sent_at >= struck), key=lambda a: a.sent_at)
    run = []
    for attempt in reversed(after):
        if not attempt.served:
            break
        run.append(attempt)
    return run[-1].sent_at if len(run) >= RECOVERED_AFTER_SERVED else None


def _requests_afterwards(load: Load) -> list[Attempt]:
    with grpc.insecure_channel(f"127.0.0.1:{load.http_port}", options=_CHANNEL_OPTIONS) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        return [one_request(stub, load.api_key, 4) for _ in range(REQUESTS_AFTERWARDS)]


def _result(process: str, signal_name: str, struck: float, recovered_at: float | None, attempts: list[Attempt],
            afterwards: list[Attempt]) -> FaultResult:  # fmt: skip
    in_flight = [a for a in attempts if a.sent_at < struck < a.answered_at]
    window_end = recovered_at if recovered_at is not None else float("inf")
    refused = [a for a in attempts if not a.served and a.answered_at >= struck and a.sent_at < window_end]
    return FaultResult(
        process=process,
        signal=signal_name,
        in_flight=len(in_flight),
        answered_within_seconds=round(max((a.answered_at - struck for a in in_flight), default=0.0), 2),
        refused_in_window=len(refused),
        reasons=dict(Counter(a.reason for a in refused)),
        recovered_after_seconds=None if recovered_at is None else round(recovered_at - struck, 2),
        served_afterwards=sum(a.served for a in afterwards),
        sent_afterwards=len(afterwards),
    )


def matrix_processes(state_dir: Path) -> list[str]:
    """The running processes of the matrix's roles, every replica of each."""
    return [process for process in roles_of(state_dir) if role_of(process) in MATRIX_ROLES]


def role_of(process: str) -> str:
    """The role of a process as roles_of names it: "gateway" and "gateway-2" are both gateways."""
    return re.sub(r"-\d+$", "", process)


def markdown_table(results: list[FaultResult]) -> str:
    lines = [
        "| process | fault | in flight | all answered within | refused in the window | reasons | recovered after | "
        "served afterwards |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reasons = ", ".join(f"{reason} ×{count}" for reason, count in sorted(r.reasons.items())) or "none"
        recovered = "never" if r.recovered_after_seconds is None else f"{r.recovered_after_seconds:.1f} s"
        kind = "SIGKILL" if r.signal == "SIGKILL" else f"SIGSTOP, {HANG_SECONDS:.0f} s"
        afterwards = f"{r.served_afterwards}/{r.sent_afterwards}"
        lines.append(f"| {r.process} | {kind} | {r.in_flight} | {r.answered_within_seconds:.1f} s | "
                     f"{r.refused_in_window} | {reasons} | {recovered} | {afterwards} |")  # fmt: skip
    return "\n".join(lines)


def run_matrix(state_dir: Path, http_port: int, api_key: str, processes: list[str]) -> list[FaultResult]:
    load = Load(http_port, api_key)
    load.start()
    results = []
    try:
        for process in processes:
            for signal_name in SIGNALS:
                results.append(inject(state_dir, process, signal_name, load))
    finally:
        load.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "faults.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshserve-faults-") as directory:
        state_dir = Path(directory) / "state"
        mesh = start_mesh(state_dir, max_queue=8, gateway_replicas=2)
        try:
            processes = matrix_processes(state_dir)
            results = run_matrix(state_dir, mesh.ports["edge_http"], mesh.api_key, processes)
        finally:
            mesh.stop()
    table = markdown_table(results)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"hang_seconds": HANG_SECONDS, "request_deadline_seconds": REQUEST_DEADLINE_SECONDS,
                "results": [asdict(result) for result in results]}  # fmt: skip
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.out}")
    raise SystemExit(0 if all(result.recovered for result in results) else 1)


if __name__ == "__main__":
    main()
