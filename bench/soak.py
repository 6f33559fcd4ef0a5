"""A bounded soak: every surface at about 80% of the mesh's capacity, with mixed priorities, for a fixed time.

Each worker holds one request at a time, rotating through the surfaces (gRPC, REST, OpenAI, jobs) and the
priorities, and rests a quarter of each request's time before the next, so the mesh's slots are busy about
80% of the time. The warm-up opens with a burst of many requests at once on each surface, so that every
connection pool behind the edge grows to the size this load can ever need: after that, one descriptor
more is a leak, not a pool. Every request is accounted for (soak_clients.py). Twice the traffic pauses, until nothing
is in flight and every job has ended: at the end of the warm-up and at the end. Each service's RSS and open
file descriptors are read at those two quiet points, where no request in flight can blur them, and the soak
fails if any RSS grew by more than 10% or any count of descriptors grew at all, Envoy's pooled connections
(which its admin stats count) aside. The last reading waits up to
SETTLE_SECONDS for descriptors above the first to go, as a connection closed on a peer's idle timeout does
(later when the CPUs are busy); a leaked one never goes.

`make soak` runs ten minutes on its own mesh (`python -m bench.soak`); tests/e2e/test_soak.py runs a short
one on the test mesh within `make test`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.processes import REPO_ROOT, roles_of, start_mesh
from bench.soak_clients import GrpcClient, JobsClient, OpenAIClient, Outcome, RestClient, Target

SURFACES = ("grpc", "rest", "openai", "jobs")
PRIORITIES = ("LOW", "NORMAL", "HIGH")
# A worker rests this share of its last request's time before the next: busy 1 / 1.25 = 80% of the time.
REST_SHARE = 0.25
MAX_RSS_GROWTH = 0.10
BURST_PER_WORKER = 4
JOBS_SETTLE_SECONDS = 120
# At a quiet point, idle keep-alive connections between the edge and the OpenAI front are let close first
# (uvicorn closes one idle for 5 s), so that the readings hold only what the mesh keeps, not what it is
# about to let go.
IDLE_CONNECTIONS_CLOSE_SECONDS = 6
# How long the last reading waits for descriptors above the first to be let go before calling them a leak.
SETTLE_SECONDS = 30


@dataclass
class Footprint:
    """One process at a quiet point: resident memory, open file descriptors, and of those the connections
    the process reports it holds (Envoy's admin stats; 0 where a process does not say)."""

    rss_bytes: int
    open_fds: int
    connections: int = 0

    @property
    def other_fds(self) -> int:
        """Descriptors other than its connections. Envoy keeps a connection pool per worker thread and
        cluster, and which workers a busy machine's scheduler wakes decides how many of them fill: a pooled
        connection more is not a leak, a descriptor more besides them is."""
        return self.open_fds - self.connections


@dataclass
class SoakReport:
    seconds: float
    warmup_seconds: float
    workers: int
    outcomes: list[Outcome] = field(default_factory=list)
    after_warmup: dict[str, Footprint] = field(default_factory=dict)
    at_end: dict[str, Footprint] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """surface -> kind -> count."""
        table: dict[str, Counter] = {surface: Counter() for surface in SURFACES}
        for outcome in self.outcomes:
            table[outcome.surface][outcome.kind] += 1
        return {surface: dict(counter) for surface, counter in table.items()}

    def reasons(self) -> dict[str, int]:
        return dict(Counter(f"{o.kind}:{o.reason}" for o in self.outcomes if o.kind != "served"))

    def violations(self) -> list[str]:
        found = [f"{o.surface} {o.priority} request lost ({o.reason or 'no answer'})" for o in self.outcomes
                 if o.kind == "lost"]  # fmt: skip
        for surface in SURFACES:
            if not any(o.surface == surface and o.kind == "served" for o in self.outcomes):
                found.append(f"no {surface} request was served")
        for role, end in self.at_end.items():
            start = self.after_warmup.get(role)
            if start is None:
                found.append(f"{role} was not running after the warm-up (replaced?)")
                continue
            if end.rss_bytes > start.rss_bytes * (1 + MAX_RSS_GROWTH):
                found.append(f"{role} RSS grew {end.rss_bytes / start.rss_bytes - 1:.1%}: "
                             f"{start.rss_bytes} -> {end.rss_bytes} bytes")  # fmt: skip
            if end.other_fds > start.other_fds:
                found.append(f"{role} open descriptors grew: {start.open_fds} -> {end.open_fds} "
                             f"(connections {start.connections} -> {end.connections})")  # fmt: skip
        if set(self.after_warmup) != set(self.at_end):
            found.append(f"the mesh's processes changed: {sorted(self.after_warmup)} -> {sorted(self.at_end)}")
        return found

    def to_json(self) -> dict:
        return {
            "seconds": self.seconds, "warmup_seconds": self.warmup_seconds, "workers": self.workers,
            "requests": len(self.outcomes), "counts": self.counts(), "reasons": self.reasons(),
            "after_warmup": {role: asdict(footprint) for role, footprint in self.after_warmup.items()},
            "at_end": {role: asdict(footprint) for role, footprint in self.at_end.items()},
            "violations": self.violations(),
        }  # fmt: skip


def footprints(state_dir: Path, edge_admin_port: int | None = None) -> dict[str, Footprint]:
    """Each of the mesh's processes, at its smallest over three reads a third of a second apart: a descriptor
    a closing connection still holds for a moment is not a leak."""
    reads = []
    for _ in range(3):
        read = {role: _footprint(pid) for role, pid in roles_of(state_dir).items()}
        if edge_admin_port is not None and "envoy" in read:
            read["envoy"].connections = envoy_connections(edge_admin_port)
        reads.append(read)
        time.sleep(1 / 3)
    roles = set.intersection(*(set(read) for read in reads))
    return {
        role: Footprint(
            min(read[role].rss_bytes for read in reads),
            *min((read[role].open_fds, read[role].connections) for read in reads),
        )
        for role in sorted(roles)
    }


def envoy_connections(admin_port: int) -> int:
    """The connections Envoy holds open, from its admin stats. The admin connection that reads them counts too."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats?filter=_cx_active$", timeout=5) as answer:
        return connections_in(answer.read().decode())


def connections_in(stats: str) -> int:
    """Every listener's downstream connections and every cluster's upstream ones, in Envoy's plain-text
    stats. A listener's per-thread copies (`worker_0`, `main_thread`) are left out: they count the same ones."""
    total = 0
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("listener.") and name.endswith(".downstream_cx_active"):
            scope = name.removeprefix("listener.").removesuffix(".downstream_cx_active").rsplit(".", 1)[-1]
            if not (scope.startswith("worker_") or scope == "main_thread"):
                total += int(value)
        elif name.startswith("cluster.") and name.endswith(".upstream_cx_active"):
            total += int(value)
    return total


def footprints_settled(
    state_dir: Path, baseline: dict[str, Footprint], within: float, edge_admin_port: int | None = None
) -> dict[str, Footprint]:
    """The footprints, read again for up to `within` seconds while any process holds more descriptors than at
    `baseline`. A connection that its far side closes on an idle timeout (uvicorn's 5 s; later on a busy
    machine) is let go meanwhile; a leaked descriptor stays, and is still there at the deadline."""
    deadline = time.monotonic() + within
    reading = footprints(state_dir, edge_admin_port)
    while time.monotonic() < deadline and any(
        role in baseline and footprint.other_fds > baseline[role].other_fds for role, footprint in reading.items()
    ):
        time.sleep(1.0)
        reading = footprints(state_dir, edge_admin_port)
    return reading


def _footprint(pid: int) -> Footprint:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return Footprint(rss_kib * 1024, len(os.listdir(f"/proc/{pid}/fd")))


class Soak:
    def __init__(self, target: Target, workers: int, max_tokens: int) -> None:
        self._target = target
        self._workers = workers
        self._max_tokens = max_tokens
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._idle = threading.Semaphore(0)
        self._jobs = JobsClient(target)

    def run(self, seconds: float, warmup_seconds: float) -> SoakReport:
        report = SoakReport(seconds, warmup_seconds, self._workers)
        started = time.monotonic()
        self._burst()
        self._running.set()
        threads = [threading.Thread(target=self._work, args=(index,), daemon=True) for index in range(self._workers)]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, warmup_seconds - (time.monotonic() - started)))
        report.after_warmup = self._quietly()
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        report.at_end = self._quietly(resume=False, settle_against=report.after_warmup)
        # Stopped before they are let go: no worker sends a request (or a job) after the last reading.
        self._stopped.set()
        self._running.set()
        for thread in threads:
            thread.join(timeout=300)
        self._jobs.close()
        report.outcomes = list(self._outcomes)
        return report

    def _burst(self) -> None:
        """BURST_PER_WORKER requests per worker at once on each surface, each streaming one on its own client."""
        clients = [make(self._target) for make in (GrpcClient, RestClient, OpenAIClient)
                   for _ in range(BURST_PER_WORKER * self._workers)]  # fmt: skip
        # Jobs too, all on the one jobs client (whose accepted jobs are settled at the quiet points): the
        # jobs service's store opens as many pooled connections as their writes need at once.
        senders = [*clients, *[self._jobs] * (BURST_PER_WORKER * self._workers)]
        threads = [threading.Thread(target=self._send, args=(client, "NORMAL")) for client in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        for client in clients:
            client.close()

    def _quietly(self, resume: bool = True, settle_against: dict[str, Footprint] | None = None) -> dict[str, Footprint]:
        """Pauses every worker between requests, lets every accepted job end, reads the footprints (settled
        against an earlier reading, if given), and resumes."""
        self._running.clear()
        for _ in range(self._workers):
            self._idle.acquire()
        with self._lock:
            self._outcomes.extend(self._jobs.settle(within=JOBS_SETTLE_SECONDS))
        time.sleep(IDLE_CONNECTIONS_CLOSE_SECONDS)
        try:
            admin = self._target.edge_admin_port
            if settle_against is None:
                return footprints(self._target.state_dir, admin)
            return footprints_settled(self._target.state_dir, settle_against, SETTLE_SECONDS, admin)
        finally:
            if resume:
                self._running.set()

    def _work(self, index: int) -> None:
        clients = {"grpc": GrpcClient(self._target), "rest": RestClient(self._target),
                   "openai": OpenAIClient(self._target), "jobs": self._jobs}  # fmt: skip
        # Each worker starts at another surface and priority, so all of them are in play at once.
        surfaces = itertools.islice(itertools.cycle(SURFACES), index, None)
        priorities = itertools.islice(itertools.cycle(PRIORITIES), index, None)
        try:
            while not self._stopped.is_set():
                if not self._running.is_set():
                    self._idle.release()
                    self._running.wait()
                    continue
                outcome = self._send(clients[next(surfaces)], next(priorities))
                time.sleep(REST_SHARE * (outcome.seconds if outcome else 0.1))
        finally:
            for surface, client in clients.items():
                if surface != "jobs":
                    client.close()

    def _send(self, client, priority: str) -> Outcome | None:
        outcome = client.send(priority, self._max_tokens)
        if outcome is not None:
            with self._lock:
                self._outcomes.append(outcome)
        return outcome


def print_report(report: SoakReport) -> None:
    summary = report.to_json()
    print(f"soak: {summary['requests']} requests in {report.seconds:.0f} s, {report.workers} workers")
    for surface, kinds in summary["counts"].items():
        print(f"  {surface:>6}: " + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())))
    for reason, count in sorted(summary["reasons"].items()):
        print(f"  {reason}: {count}")
    for role, end in report.at_end.items():
        start = report.after_warmup.get(role)
        if start is not None:
            print(f"  {role:>12}: RSS {start.rss_bytes / 2**20:.1f} -> {end.rss_bytes / 2**20:.1f} MiB, "
                  f"descriptors {start.open_fds} -> {end.open_fds}, of them connections "
                  f"{start.connections} -> {end.connections}")  # fmt: skip
    for violation in summary["violations"]:
        print(f"  VIOLATION: {violation}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=120, help="seconds before the first reading")
    parser.add_argument("--workers", type=int, default=2, help="requests in flight: the model's slots")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshserve-soak-") as directory:
        state_dir = Path(directory) / "state"
        mesh = start_mesh(state_dir, max_queue=8)
        try:
            target = Target(mesh.ports["edge_http"], mesh.ports["edge_https"], state_dir / "certs" / "ca.pem",
                            mesh.api_key, state_dir, mesh.ports["edge_admin"])  # fmt: skip
            report = Soak(target, args.workers, args.max_tokens).run(args.seconds, args.warmup)
        finally:
            mesh.stop()
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(f"written to {args.out}")
    raise SystemExit(1 if report.violations() else 0)


if __name__ == "__main__":
    main()
