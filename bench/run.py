"""`make bench`: the same model, prompt and sampling through every system, interleaved round by round.

Systems: the engine in process (the floor), meshserve over gRPC through the TLS edge, meshserve over
REST+SSE, meshserve's OpenAI API, llama-cpp-python's own server, and llama.cpp's llama-server (built by
`make llama-server`). Figures are medians over rounds; ratios are to the floor measured in the same run,
because this machine is noisy. Then the latencies the tests leave to the benchmark (bench/timings.py):
refusals, freed slots, cancels, a killed service, and vLLM's batching; interactive latency with a batch of
jobs running (bench/batch_interference.py); the mesh's own ceiling, with the simulated engine
(bench/relay.py); and the batched llama.cpp engine against the per-slot engine at 4 and 16 slots
(bench/engine_batching.py)."""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.batch_interference import FULL_BATCH, QUICK_BATCH, BatchPlan, batch_interference
from bench.batch_interference import describe as describe_batch
from bench.burst import BurstResult, burst_priorities, describe, run_burst
from bench.chart import write_chart, write_relay_chart
from bench.clients import FloorClient, LedgerReader, MeshGrpcClient, MeshOpenAIClient, MeshRestClient, PeerClient
from bench.engine_batching import FULL_BATCHING, QUICK_BATCHING, BatchingPlan, engine_batching
from bench.engine_batching import describe as describe_engine_batching
from bench.measure import CpuSample, interleaved_rounds, mesh_overhead, progress
from bench.overload import offer_load
from bench.peers import LLAMA_SERVER, start_llama_cpp_server, start_llama_server
from bench.processes import MEMORY_BUDGET, REPO_ROOT, start_mesh
from bench.profile import Profile
from bench.profile import describe as describe_profiles
from bench.relay import FULL_RELAY, QUICK_RELAY, RelayPlan, relay_benchmark
from bench.relay import describe as describe_relay
from bench.report import FLOOR, combine, machine, ratios_to, table, write_json
from bench.timings import FULL_TIMINGS, QUICK_TIMINGS, TimingPlan, mesh_timings
from bench.timings import describe as describe_timings
from bench.vllm_peers import describe as describe_vllm_peers
from bench.vllm_peers import vllm_comparison
from bench.vllm_timings import vllm_timings
from bench.workload import FULL, FULL_VLLM, QUICK, Workload
from services.shared.certs import dev_identity
from services.shared.mesh_config import ModelConfig, load_mesh_config

# The mesh's queue bound in the benchmark: it holds every waiting client of the closed-loop runs (at most 14
# of 16 wait on 2 slots), and is below the backlog 3x overload builds, so some of it is refused at the door.
BENCH_MAX_QUEUE = 16


def mesh_burst(mesh, client: MeshGrpcClient, slots: int, max_tokens: int) -> BurstResult:
    """3x (slots + queue bound) requests at once; as many HIGH as the queue holds."""
    capacity = slots + BENCH_MAX_QUEUE
    ledger = LedgerReader(mesh.ports["scheduler"], dev_identity(mesh.state_dir / "certs", "cli"))
    try:
        priorities = burst_priorities(capacity, high=BENCH_MAX_QUEUE)
        return run_burst(partial(client.stream, max_tokens), priorities, capacity, ledger)
    finally:
        ledger.close()


def engine_cpu_per_token(samples: list[CpuSample]) -> float:
    tokens = sum(sample.tokens for sample in samples)
    return sum(sample.own for sample in samples) / tokens if tokens else 0.0


def measure_mesh_and_peers(
    config: ModelConfig,
    workload: Workload,
    overload_seconds: float,
    timing_plan: TimingPlan,
    batch_plan: BatchPlan,
    scratch: Path,
    llama_server: Path | None,
) -> dict:
    progress("loading the engine in process, starting meshserve and its peers...")
    floor = FloorClient(config)
    mesh = start_mesh(scratch / "mesh", BENCH_MAX_QUEUE)
    peers = [start_llama_cpp_server(config, scratch / "llama_cpp.server.log")]
    if llama_server is not None:
        peers.append(start_llama_server(llama_server, config, scratch / "llama-server.log"))
    try:
        ca = mesh.state_dir / "certs" / "ca.pem"
        grpc_client = MeshGrpcClient(mesh.ports["edge_https"], ca, mesh.api_key)
        peer_clients = [PeerClient(peer.port, peer.name) for peer in peers]
        peer_client = peer_clients[0]
        rest = MeshRestClient(mesh.ports["edge_http"], mesh.api_key)
        openai = MeshOpenAIClient(mesh.ports["edge_http"], mesh.api_key)
        clients = [floor, grpc_client, rest, openai, *peer_clients]
        for client in clients:
            client.stream(4)  # warm-up: first-request costs are not what is measured
        progress("every system, round by round...")
        summaries, cpu = interleaved_rounds(clients, workload, mesh)
        combined = combine(summaries)
        capacity = max(f["requests_per_second"] for f in combined[FLOOR].values())
        # Three times what the engine can serve, with a deadline of eight single-request latencies: long
        # enough that the backlog outgrows the mesh's queue bound, as a sustained overload does.
        rate, deadline = 3 * capacity, max(4.0, 8 * combined[FLOOR][1]["end_to_end"]["p50"])
        progress("three times the engine's capacity, and a burst...")
        overload = [offer_load(c, rate, overload_seconds, deadline, workload.max_tokens)
                    for c in (grpc_client, peer_client)]  # fmt: skip
        burst = mesh_burst(mesh, grpc_client, config.slots, workload.max_tokens)
        progress("timing refusals, freed slots, cancels and a killed inference service...")
        timings = {"mesh": mesh_timings(mesh, config.slots, BENCH_MAX_QUEUE, timing_plan)}
        progress("timing interactive requests with a batch of jobs running...")
        batch = batch_interference(mesh, grpc_client, batch_plan)
    finally:
        mesh.stop()
        for peer in peers:
            peer.stop()
    return {"combined": combined, "cpu": cpu, "overload": overload, "rate": rate, "deadline": deadline,
            "burst": burst, "timings": timings, "batch": batch}  # fmt: skip


@dataclass(frozen=True)
class BenchPlan:
    workload: Workload
    overload_seconds: float
    timings: TimingPlan
    batch: BatchPlan
    batching: BatchingPlan
    relay: RelayPlan
    # meshserve on vLLM against vllm serve, and vLLM's timings; None: neither (each vLLM start costs a minute
    # or more on this machine, which a quick run does not have).
    vllm: Workload | None


FULL_PLAN = BenchPlan(FULL, 15.0, FULL_TIMINGS, FULL_BATCH, FULL_BATCHING, FULL_RELAY, FULL_VLLM)
QUICK_PLAN = BenchPlan(QUICK, 5.0, QUICK_TIMINGS, QUICK_BATCH, QUICK_BATCHING, QUICK_RELAY, vllm=None)
VLLM_SKIPPED = {"skipped": "a quick run leaves vLLM to the full benchmark"}


def run(plan: BenchPlan, out_dir: Path, llama_server: Path | None) -> None:
    config = load_mesh_config(REPO_ROOT / "deploy" / "meshserve.toml").models[0]
    workload, timing_plan, batching_plan = plan.workload, plan.timings, plan.batching
    with tempfile.TemporaryDirectory() as scratch:
        measured = measure_mesh_and_peers(config, workload, plan.overload_seconds, timing_plan, plan.batch,
                                          Path(scratch), llama_server)  # fmt: skip
        if plan.vllm is None:
            measured["timings"]["vllm"], vllm_peers = VLLM_SKIPPED, VLLM_SKIPPED
        else:
            progress("timing vLLM on its own inference service...")
            measured["timings"]["vllm"] = vllm_timings(Path(scratch), timing_plan)
            vllm_peers = vllm_comparison(Path(scratch), plan.vllm)
        progress("the mesh's own ceiling: streams of the simulated engine...")
        relay = relay_benchmark(Path(scratch), plan.relay)
    progress("the batched llama.cpp engine against the per-slot engine...")
    batching = engine_batching(config, batching_plan)
    combined, overload, burst, timings = (measured[k] for k in ("combined", "overload", "burst", "timings"))
    ratios = ratios_to(combined)
    peer_ratios = ratios_to(combined, LLAMA_SERVER) if LLAMA_SERVER in combined else None
    overhead = mesh_overhead(measured["cpu"]["mesh"], engine_cpu_per_token(measured["cpu"]["floor"]))
    print(table(combined, ratios, overhead, overload, LLAMA_SERVER, peer_ratios))
    print("\n" + describe(burst))
    print("\n" + describe_timings(timings))
    print("\n" + describe_batch(measured["batch"]))
    print("\n" + describe_engine_batching(batching))
    print("\n" + describe_vllm_peers(vllm_peers))
    print("\n" + describe_relay(relay))
    print("\n" + describe_profiles([Profile(**profile) for profile in relay["profile"]["processes"]]))
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    host = machine()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "latest.json", measured_at=when, machine=host, workload=workload, results=combined,
               ratios_to_floor=ratios, ratios_to_llama_server=peer_ratios, mesh_cpu_per_1000_tokens=overhead,
               overload=overload,
               overload_settings={"rate_per_second": measured["rate"], "deadline_seconds": measured["deadline"],
                                  "mesh_max_queue": BENCH_MAX_QUEUE},
               burst=burst, burst_settings={"memory_budget": MEMORY_BUDGET}, timings=timings,
               timing_settings=timing_plan, batch_interference=measured["batch"],
               engine_batching=batching, engine_batching_settings=batching_plan, relay=relay,
               vllm_peers=vllm_peers)  # fmt: skip
    machine_line = f"{when}: {host['cpu']}, {host['cores']} cores"
    write_chart(out_dir / "latest.png", combined, overload, f"meshserve benchmark, {machine_line}, gemma-3-270m Q4_K_M")
    write_relay_chart(out_dir / "relay.png", relay, f"meshserve relay with the simulated engine, {machine_line}")
    print(f"\nwrote latest.json, latest.png and relay.png in {out_dir}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="shorter cells, one round, fewer tries, no vLLM: under four minutes"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--llama-server", type=Path, help="llama.cpp's llama-server binary (make llama-server)")
    args = parser.parse_args()
    started = time.monotonic()
    run(QUICK_PLAN if args.quick else FULL_PLAN, args.out, args.llama_server)
    print(f"benchmark took {time.monotonic() - started:.0f}s", file=sys.stderr)
