"""The batched llama.cpp engine against the per-slot engine: tokens per second with as many slots as clients.

Both engines run in this process on the same model, threads and machine, with slots equal to the number
of concurrent clients (4 and 16). Each cell is a closed loop for a fixed time: every client sends its next
request as soon as the last one ends, and the tokens that arrive inside the window are counted. Rounds
interleave the engines, and each figure is the median over rounds with its spread (min and max) beside it.
The process's resident memory after loading each engine is recorded too: weights once against a copy
per slot.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass

from bench.workload import PROMPT, SEED
from services.inference.core.engine import Engine
from services.inference.engines.llama_cpp import LlamaCppEngine
from services.inference.engines.llama_cpp_per_slot import PerSlotLlamaCppEngine
from services.inference.engines.llama_prompt import resident_bytes
from services.shared.domain import GenerationRequest, SamplingParams
from services.shared.mesh_config import ModelConfig

ENGINES = {"batched": LlamaCppEngine, "per-slot": PerSlotLlamaCppEngine}


@dataclass(frozen=True)
class BatchingPlan:
    concurrencies: tuple[int, ...]
    seconds_per_cell: float
    rounds: int
    max_tokens: int


FULL_BATCHING = BatchingPlan((4, 16), seconds_per_cell=5.0, rounds=3, max_tokens=64)
QUICK_BATCHING = BatchingPlan((4, 16), seconds_per_cell=3.0, rounds=1, max_tokens=24)


async def tokens_in_window(engine: Engine, clients: int, seconds: float, max_tokens: int) -> int:
    """Tokens streamed by `clients` closed-loop clients within `seconds`."""
    request = GenerationRequest(SamplingParams(max_tokens, 0.0, 1.0, SEED), prompt=PROMPT)
    ends = time.monotonic() + seconds
    counted = 0

    async def client() -> None:
        nonlocal counted
        while time.monotonic() < ends:
            prompt = await engine.prepare(request)
            stream = engine.generate(request, prompt)
            try:
                async for chunk in stream:
                    if time.monotonic() >= ends:
                        return
                    counted += len(chunk.token_ids)
            finally:
                await stream.aclose()

    await asyncio.gather(*(client() for _ in range(clients)))
    return counted


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def _measure(config: ModelConfig, plan: BatchingPlan) -> dict:
    engines: dict[tuple[str, int], Engine] = {}
    resident: dict[str, dict[int, int]] = {name: {} for name in ENGINES}
    for concurrency in plan.concurrencies:
        for name, engine_class in ENGINES.items():
            before = resident_bytes()
            engine = engine_class(config.model_copy(update={"slots": concurrency}))
            await asyncio.to_thread(engine.load)
            resident[name][concurrency] = resident_bytes() - before
            await tokens_in_window(engine, concurrency, 1.0, 4)  # warm-up
            engines[(name, concurrency)] = engine
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in engines}
    try:
        for round_number in range(1, plan.rounds + 1):
            for concurrency in plan.concurrencies:
                for name in ENGINES:
                    engine = engines[(name, concurrency)]
                    tokens = await tokens_in_window(engine, concurrency, plan.seconds_per_cell, plan.max_tokens)
                    rates[(name, concurrency)].append(tokens / plan.seconds_per_cell)
                    print(f"round {round_number} {name:<9} engine c={concurrency:<3} "
                          f"{rates[(name, concurrency)][-1]:6.1f} tok/s", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for engine in engines.values():
            await engine.close()
    cells = {}
    for concurrency in plan.concurrencies:
        batched, per_slot = rates[("batched", concurrency)], rates[("per-slot", concurrency)]
        cells[concurrency] = {
            "batched_tokens_per_second": spread(batched),
            "per_slot_tokens_per_second": spread(per_slot),
            "ratio": spread([b / p for b, p in zip(batched, per_slot, strict=True)]),
            "batched_loaded_bytes": resident["batched"][concurrency],
            "per_slot_loaded_bytes": resident["per-slot"][concurrency],
        }
    return cells


def engine_batching(config: ModelConfig, plan: BatchingPlan) -> dict:
    return asyncio.run(_measure(config, plan))


def describe(cells: dict) -> str:
    lines = ["batched llama.cpp engine vs per-slot contexts (tok/s, median [min-max] over rounds; memory loaded):"]
    for concurrency, cell in cells.items():
        batched, per_slot, ratio = (
            cell["batched_tokens_per_second"], cell["per_slot_tokens_per_second"], cell["ratio"]
        )  # fmt: skip
        lines.append(
            f"  c={concurrency:<3} batched {batched['median']:6.1f} [{batched['min']:.1f}-{batched['max']:.1f}]"
            f"  per-slot {per_slot['median']:6.1f} [{per_slot['min']:.1f}-{per_slot['max']:.1f}]"
            f"  ratio {ratio['median']:.2f}x [{ratio['min']:.2f}-{ratio['max']:.2f}]"
            f"  loaded {cell['batched_loaded_bytes'] / 2**20:.0f} MiB"
            f" vs {cell['per_slot_loaded_bytes'] / 2**20:.0f} MiB"
        )
    return "\n".join(lines)
