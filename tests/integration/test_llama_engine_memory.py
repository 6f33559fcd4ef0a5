"""What slots cost in memory, measured from the inference process: with the batched llama.cpp engine, four
slots hold the weights once and four sequences' KV cache, and the scheduler's ledger counts them so; the
per-slot engine, measured the same way, holds a copy of the weights per slot."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from meshserve.inference.v1 import inference_pb2 as pb
from meshserve.inference.v1 import inference_pb2_grpc

from orchestrator.scheduler.endpoint_watcher import footprint_of
from tests.conftest import track, untrack
from tests.support import ServiceProcess, free_port, inference_args, model_entry, wait_until_serving

CONTEXT_LENGTH = 2048


@dataclass(frozen=True)
class Measured:
    resident_bytes: int
    info: pb.ModelInfo


@contextmanager
def inference_service(directory: Path, slots: int, engine: str) -> Iterator[tuple[ServiceProcess, str]]:
    config = directory / f"{engine}-{slots}.toml"
    config.write_text(
        model_entry("gemma-3-270m", context_length=CONTEXT_LENGTH, slots=slots, threads=2, engine=f'"{engine}"')
    )
    port = free_port()
    process = track(ServiceProcess("inference", inference_args(config, port, "--plaintext"), directory / "log"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until_serving(channel, process)
            yield process, f"127.0.0.1:{port}"
    finally:
        process.terminate()
        untrack(process)


def measured(directory: Path, slots: int, engine: str = "llama_cpp") -> Measured:
    """The process's resident memory after every slot has run a request at once, and what it reports."""
    with inference_service(directory, slots, engine) as (process, address):
        with grpc.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            request = pb.GenerateRequest(prompt="Name the planets:", max_tokens=16, temperature=0.0)
            with ThreadPoolExecutor(slots) as pool:
                replies = list(pool.map(lambda _: list(stub.Generate(request, timeout=120)), range(slots)))
            assert all(reply[-1].usage.output_tokens == 16 for reply in replies)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).model
        return Measured(process.resident_bytes(), info)


def test_four_slots_hold_the_weights_once_and_four_kv_caches(tmp_path: Path) -> None:
    one, four = measured(tmp_path, slots=1), measured(tmp_path, slots=4)
    weights, kv_per_slot = four.info.weights_bytes, four.info.kv_cache_bytes_per_slot
    assert weights > 200 * 2**20 and kv_per_slot > 0
    added = four.resident_bytes - one.resident_bytes
    # Three more slots cost their KV cache (and llama.cpp's compute buffers for a wider batch), not three
    # more copies of the weights: less than even one copy.
    assert added < weights
    assert added <= 3 * kv_per_slot + 64 * 2**20
    # What the engine reports is the weights once and four KV caches, within what the process holds.
    assert four.info.memory_footprint_bytes >= weights + 4 * kv_per_slot
    assert four.info.memory_footprint_bytes <= four.resident_bytes
    assert four.info.memory_footprint_bytes < 2 * weights + 4 * kv_per_slot
    # The scheduler's ledger: the weights while loaded, whatever the slots, and a KV cache per running request.
    ledger_one, ledger_four = footprint_of(one.info), footprint_of(four.info)
    assert ledger_four.kv_bytes_per_slot == kv_per_slot
    assert weights <= ledger_four.weights_bytes < 2 * weights
    assert abs(ledger_four.weights_bytes - ledger_one.weights_bytes) < weights / 2


def test_the_per_slot_engine_measured_the_same_way_holds_a_copy_of_the_weights_per_slot(tmp_path: Path) -> None:
    one, four = measured(tmp_path, 1, "llama_cpp_per_slot"), measured(tmp_path, 4, "llama_cpp_per_slot")
    assert four.info.engine == "llama_cpp_per_slot"
    # The measurement above would see copies: here three more slots cost more than two more copies.
    assert four.resident_bytes - one.resident_bytes > 2 * four.info.weights_bytes
