"""Running one system at one concurrency, and accounting for the CPU the mesh's own processes spend."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.processes import Mesh, cpu_seconds
from bench.report import FLOOR
from bench.workload import Measurement, RunSummary, Workload, summarize

MESH_OVERHEAD_ROLES = ("envoy", "gateway", "openai", "auth", "scheduler")
_STARTED = time.monotonic()


def progress(message: str) -> None:
    """A line on stderr with the seconds since the benchmark started, so a log shows what each part costs."""
    print(f"[{time.monotonic() - _STARTED:5.0f}s] {message}", file=sys.stderr, flush=True)


def run_closed_loop(client, concurrency: int, workload: Workload) -> tuple[list[Measurement], tuple[float, float]]:
    """`concurrency` clients, each sending one request after another for the cell's window, and cutting what
    still streams when it ends. The results, and the window (monotonic start and end)."""
    start = time.monotonic()
    end = start + workload.cell_seconds

    def one_client(_: int) -> list[Measurement]:
        sent = []
        while time.monotonic() < end:
            sent.append(client.stream(workload.max_tokens, until=end).check_length(workload.max_tokens))
        return sent

    with ThreadPoolExecutor(concurrency) as pool:
        return [m for client_results in pool.map(one_client, range(concurrency)) for m in client_results], (start, end)


def settle(client) -> None:
    """Waits until the system has nothing left of the cell: one request of one token, answered once what
    was queued before it is done. A cut stream's request may go on inside a server that does not stop
    work its client left (or did not stop it yet), and that work must not run into the next cell."""
    client.stream(1, deadline=120)


@dataclass
class CpuSample:
    """CPU seconds spent during one run: the bench process itself, and each mesh process."""

    own: float
    mesh: dict[str, float]
    tokens: int


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


class CpuMeter:
    """CPU seconds each of the given processes, and this one (the clients), spends between start() and stop()."""

    def __init__(self, roles: dict[str, int]) -> None:
        self._roles = roles
        self._before: dict[str, float] = {}

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {role: after[role] - self._before[role] for role in after}

    def _read(self) -> dict[str, float]:
        return {**{role: cpu_seconds(pid) for role, pid in self._roles.items()}, "clients": own_cpu()}


def measure(client, concurrency: int, workload: Workload, mesh: Mesh | None) -> tuple[RunSummary, CpuSample]:
    roles = mesh.roles() if mesh else {}
    before_own, before = own_cpu(), {role: cpu_seconds(pid) for role, pid in roles.items()}
    results, window = run_closed_loop(client, concurrency, workload)
    spent = {role: cpu_seconds(pid) - before[role] for role, pid in roles.items()}
    settle(client)
    # The CPU was spent on every token streamed, those after the window's end included.
    streamed = sum(len(m.token_times) for m in results if m.answered)
    return summarize(client.name, concurrency, results, window), CpuSample(own_cpu() - before_own, spent, streamed)


def mesh_overhead(samples: list[CpuSample], engine_cpu_per_token: float) -> dict[str, float]:
    """CPU seconds per 1,000 tokens of Envoy, gateway, scheduler, and the inference service minus its engine.

    The engine's share of the inference process is the engine's CPU per token measured in process, in the
    same run, times the tokens the mesh streamed.
    """
    tokens = sum(sample.tokens for sample in samples)
    if not tokens:
        return {}
    per_thousand = {role: 1000 * sum(s.mesh.get(role, 0.0) for s in samples) / tokens for role in MESH_OVERHEAD_ROLES}
    inference = 1000 * sum(s.mesh.get("inference", 0.0) for s in samples) / tokens
    # An estimate by difference: where it falls to zero or below, the service's own share is within the noise
    # of the engine's, and it is reported as zero rather than as negative CPU.
    per_thousand["inference minus engine"] = max(0.0, inference - 1000 * engine_cpu_per_token)
    per_thousand["total"] = sum(per_thousand.values())
    per_thousand["engine"] = 1000 * engine_cpu_per_token
    per_thousand["share of engine"] = per_thousand["total"] / per_thousand["engine"] if engine_cpu_per_token else 0.0
    return per_thousand


def interleaved_rounds(clients: list, workload: Workload, mesh) -> tuple[list[RunSummary], dict[str, list]]:
    summaries, cpu = [], {"floor": [], "mesh": []}
    for round_number in range(1, workload.rounds + 1):
        for client in clients:
            for concurrency in workload.concurrencies:
                is_mesh = client.name.startswith("meshserve")
                summary, sample = measure(client, concurrency, workload, mesh if is_mesh else None)
                summaries.append(summary)
                if client.name == FLOOR:
                    cpu["floor"].append(sample)
                elif is_mesh:
                    cpu["mesh"].append(sample)
                print(f"round {round_number} {client.name:<20} c={concurrency:<3} "
                      f"{summary.output_tokens_per_second:6.1f} tok/s", file=sys.stderr, flush=True)  # fmt: skip
    return summaries, cpu
