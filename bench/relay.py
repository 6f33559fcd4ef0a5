"""The mesh's own ceiling: how many tokens it relays when the engine is never what limits a stream.

The mesh serves one model on the simulated engine (services/inference/engines/simulated.py): every running
sequence gets a token each 1 / `tokens_per_second`, for as many sequences as the clients run. Closed-loop
clients hold 1 to 256 streams open, straight to one gateway and through Envoy, for a fixed window each,
interleaved round by round. Of each cell: tokens and messages per second, the time to first token, the
interval between a stream's tokens against the engine's own, the longest stall between two messages of
one stream, and the CPU each mesh process spent per 1,000 tokens.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench.measure import CpuMeter
from bench.processes import Mesh, start_mesh
from bench.profile import Profile, Sampler
from bench.profile import describe as describe_profiles
from bench.relay_clients import RelayTarget, StreamRecord, edge_target, gateway_target, run_streams
from bench.workload import percentile

RELAY_MODEL = "relay-sim"
STALL_TARGET_SECONDS = 0.25


@dataclass(frozen=True)
class RelayPlan:
    concurrencies: tuple[int, ...]
    # The measured window of each cell, after `warmup` seconds of the same load.
    seconds: float
    warmup: float
    rounds: int
    # The simulated engine's pace for each sequence, and each request's length.
    tokens_per_second: float
    max_tokens: int
    # The cell whose processes py-spy samples, in the last round: streams through Envoy at this concurrency.
    profiled_concurrency: int


# Each stream at 500 tokens a second, as a GPU streams a small model: from 16 streams on, more than the mesh
# relays on this machine, so what is measured is the mesh. Requests of four seconds or more: at 256 streams
# they stay under the edge's 100 requests a second.
FULL_RELAY = RelayPlan((1, 16, 64, 256), 3.5, 1.0, 3, 500.0, max_tokens=2000, profiled_concurrency=256)
QUICK_RELAY = RelayPlan((1, 256), 3.0, 1.0, 1, 500.0, max_tokens=2000, profiled_concurrency=256)


def relay_config(directory: Path, plan: RelayPlan) -> Path:
    """A mesh of one simulated model with a slot for every stream the plan opens."""
    path = directory / "relay.toml"
    path.write_text(
        f'[[models]]\nname = "{RELAY_MODEL}"\nengine = "simulated"\nslots = {max(plan.concurrencies)}\n'
        f"context_length = {plan.max_tokens + 64}\ndefault_max_tokens = {plan.max_tokens}\n\n"
        f"[models.simulated]\ntokens_per_second = {plan.tokens_per_second}\nfirst_token_seconds = 0.0\n"
    )
    return path


@dataclass(frozen=True)
class RelayCell:
    path: str
    concurrency: int
    tokens_per_second: float
    messages_per_second: float
    tokens_per_message: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    # A stream's time per token (from its first message to its last, over the tokens after the first),
    # p50 across requests, and what it adds to the engine's own interval.
    token_interval_p50_ms: float | None
    token_interval_added_ms: float | None
    message_gap_p99_ms: float | None
    longest_stall_ms: float | None
    stalls_over_target: int
    failures: int
    cpu_per_1000_tokens: dict[str, float]
    failure_reasons: dict[str, int]
    # CPU seconds a second over the cell, of every mesh process and the benchmark's clients together, and of
    # the clients alone: near the machine's cores, the machine is what limits the cell.
    cores_busy: float = 0.0
    client_cores: float = 0.0


def summarize_cell(
    path: str, concurrency: int, records: list[StreamRecord], window: tuple[float, float], plan: RelayPlan
) -> RelayCell:
    """The figures of one cell, counting only what arrived inside its measured window."""
    start, end = window
    tokens = messages = 0
    ttfts, intervals, gaps = [], [], []
    for record in records:
        inside = [(at, count) for at, count in zip(record.arrivals, record.tokens, strict=True) if start <= at <= end]
        tokens += sum(count for _, count in inside)
        messages += len(inside)
        if record.arrivals and start <= record.sent <= end:
            ttfts.append(record.arrivals[0] - record.sent)
        gaps += [later - earlier for (earlier, _), (later, _) in zip(inside, inside[1:], strict=False)]
        after_first = sum(count for _, count in inside[1:])
        if after_first > 0:
            intervals.append((inside[-1][0] - inside[0][0]) / after_first)
    seconds = end - start
    interval = percentile(intervals, 0.5)
    return RelayCell(
        path=path,
        concurrency=concurrency,
        tokens_per_second=tokens / seconds,
        messages_per_second=messages / seconds,
        tokens_per_message=tokens / messages if messages else 0.0,
        ttft_p50_ms=_ms(percentile(ttfts, 0.5)),
        ttft_p99_ms=_ms(percentile(ttfts, 0.99)),
        token_interval_p50_ms=_ms(interval),
        token_interval_added_ms=_ms(None if interval is None else interval - 1 / plan.tokens_per_second),
        message_gap_p99_ms=_ms(percentile(gaps, 0.99)),
        longest_stall_ms=_ms(max(gaps, default=None)),
        stalls_over_target=sum(gap > STALL_TARGET_SECONDS for gap in gaps),
        failures=sum(1 for record in records if record.failure),
        cpu_per_1000_tokens={},
        failure_reasons=dict(Counter(record.failure for record in records if record.failure)),
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


async def _cell(
    target: RelayTarget, concurrency: int, plan: RelayPlan, mesh: Mesh, profile_to: Path | None
) -> tuple[RelayCell, list[Profile]]:
    loop = asyncio.get_running_loop()
    start = loop.time() + plan.warmup
    end = start + plan.seconds
    roles = mesh.roles()
    meter = CpuMeter(roles)
    ramp = plan.warmup / 2
    streams = asyncio.ensure_future(run_streams(target, RELAY_MODEL, concurrency, plan.max_tokens, end, ramp))
    await asyncio.sleep(plan.warmup)  # the window starts once the load has settled: pacing, not ordering
    meter.start()
    metered_from = loop.time()
    sampler = Sampler(roles, plan.seconds, profile_to) if profile_to else None
    records = await streams
    cell = summarize_cell(target.name, concurrency, records, (start, end), plan)
    spent = meter.stop()
    metered = loop.time() - metered_from
    per_thousand = {role: 1000 * seconds / max(1.0, cell.tokens_per_second * plan.seconds)
                    for role, seconds in spent.items()}  # fmt: skip
    profiles = await asyncio.to_thread(sampler.read) if sampler else []
    cores_busy, client_cores = sum(spent.values()) / metered, spent["clients"] / metered
    return replace(cell, cpu_per_1000_tokens=per_thousand, cores_busy=cores_busy, client_cores=client_cores), profiles


def median_cells(cells: list[RelayCell]) -> dict:
    """One path at one concurrency over rounds: each figure's median, and its spread as [min, max]."""
    figures: dict = {"path": cells[0].path, "concurrency": cells[0].concurrency, "rounds": len(cells)}
    for name, value in asdict(cells[0]).items():
        if isinstance(value, int | float) and name not in ("concurrency",):
            values = [getattr(cell, name) for cell in cells if getattr(cell, name) is not None]
            figures[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    roles = cells[0].cpu_per_1000_tokens
    figures["failure_reasons"] = dict(sum((Counter(cell.failure_reasons) for cell in cells), Counter()))
    figures["cpu_per_1000_tokens"] = {
        role: statistics.median(cell.cpu_per_1000_tokens.get(role, 0.0) for cell in cells) for role in roles
    }
    return figures


def relay_benchmark(scratch: Path, plan: RelayPlan) -> dict:
    """Every path at every concurrency, interleaved round by round, on a mesh of its own; the processes
    sampled by py-spy in one cell of the last round."""
    mesh = start_mesh(scratch / "relay-mesh", max_queue=16, config=relay_config(scratch, plan))
    try:
        targets = [gateway_target(mesh.state_dir, mesh.ports["gateway"]),
                   edge_target(mesh.state_dir, mesh.ports["edge_https"], mesh.api_key)]  # fmt: skip
        rounds: dict[tuple[str, int], list[RelayCell]] = {}
        profiles: list[Profile] = []
        for round_number in range(1, plan.rounds + 1):
            for target in targets:
                for concurrency in plan.concurrencies:
                    profiled = (round_number, target, concurrency) == (
                        plan.rounds,
                        targets[-1],
                        plan.profiled_concurrency,
                    )
                    profile_to = scratch / "profiles" if profiled else None
                    cell, sampled = asyncio.run(_cell(target, concurrency, plan, mesh, profile_to))
                    profiles += sampled
                    rounds.setdefault((target.name, concurrency), []).append(cell)
                    print(f"relay round {round_number} {target.name:<14} c={concurrency:<4} "
                          f"{cell.tokens_per_second:8.0f} tok/s {cell.messages_per_second:8.0f} msg/s "
                          f"stall {cell.longest_stall_ms or 0:6.0f} ms", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        mesh.stop()
    return {"settings": asdict(plan), "cells": [median_cells(cells) for cells in rounds.values()],
            "profile": {"path": targets[-1].name, "concurrency": plan.profiled_concurrency,
                        "processes": [asdict(profile) for profile in profiles]}}  # fmt: skip


def describe(relay: dict) -> str:
    settings = relay["settings"]
    lines = [
        f"Relay (simulated engine, {settings['tokens_per_second']:.0f} tokens/s per stream; median [least, most]):",
        "| path | streams | tokens/s | messages/s | TTFT p50 | interval added | longest stall | mesh CPU s/1k tok "
        "| cores busy (clients) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in relay["cells"]:
        cpu = sum(seconds for role, seconds in cell["cpu_per_1000_tokens"].items() if role != "clients")
        lines.append(
            f"| {cell['path']} | {cell['concurrency']} | {_spread(cell['tokens_per_second'], '.0f')} | "
            f"{_spread(cell['messages_per_second'], '.0f')} | {_spread(cell.get('ttft_p50_ms'), '.1f')} ms | "
            f"{_spread(cell.get('token_interval_added_ms'), '.2f')} ms | "
            f"{_spread(cell.get('longest_stall_ms'), '.0f')} ms | {cpu:.2f} | "
            f"{cell['cores_busy']['median']:.2f} ({cell['client_cores']['median']:.2f}) |"
        )
    return "\n".join(lines)


def _spread(figure: dict | None, spec: str) -> str:
    if not figure:
        return "-"
    return f"{figure['median']:{spec}} [{figure['min']:{spec}}, {figure['max']:{spec}}]"


def main() -> None:
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer streams, shorter windows, one round")
    parser.add_argument("--out", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        relay = relay_benchmark(Path(scratch), QUICK_RELAY if args.quick else FULL_RELAY)
    print(describe(relay))
    print(describe_profiles([Profile(**profile) for profile in relay["profile"]["processes"]]))
    if args.out:
        args.out.write_text(json.dumps(relay, indent=2) + "\n")


if __name__ == "__main__":
    main()
