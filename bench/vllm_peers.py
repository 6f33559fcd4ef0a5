"""meshserve's vLLM engine against `vllm serve`, on the same model and vLLM settings, interleaved.

The model is the tiny random Llama the tests build offline (tests/tiny_llama.py): it streams noise, fast,
and never chooses its end-of-sequence token, so every answer has the length asked for. meshserve serves it
through the whole mesh (the TLS edge, the gateway, the scheduler, the inference service with vLLM in it)
and is called on its OpenAI API and over gRPC; `vllm serve` is called on its own OpenAI API. Both run
vLLM's engine at the same CPU priority, with the same sequences, context, KV-cache pool and eager mode.
On a GPU host, the same comparison runs with the CUDA build (`make VLLM_EXTRA=vllm vllm`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bench.clients import MeshGrpcClient, MeshOpenAIClient, PeerClient
from bench.measure import interleaved_rounds, progress
from bench.peers import start_vllm_serve
from bench.processes import start_mesh
from bench.report import combine, ratio_text, ratios_to, throughput_text
from bench.workload import Workload

MODEL = "tiny-llama"
VLLM_SERVE = "vllm serve"
SLOTS = 8
CONTEXT_LENGTH = 2048
KV_CACHE_BYTES = 64 * 2**20


def vllm_mesh_config(directory: Path, model: Path) -> Path:
    path = directory / "vllm-mesh.toml"
    path.write_text(
        f'[[models]]\nname = "{MODEL}"\nengine = "vllm"\npath = "{model}"\ncontext_length = {CONTEXT_LENGTH}\n'
        f"slots = {SLOTS}\ndefault_max_tokens = 64\n\n[models.vllm]\nkv_cache_bytes = {KV_CACHE_BYTES}\n"
        # vllm serve leaves its engine at the CPU priority it started with; so does this mesh, here.
        "enforce_eager = true\nengine_niceness = 0\n"
    )
    return path


def vllm_comparison(scratch: Path, workload: Workload) -> dict:
    """Medians over interleaved rounds, or the reason there are none."""
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vLLM is not installed: make vllm"}
    from tests.tiny_llama import cached_tiny_llama

    model = cached_tiny_llama()
    progress("starting meshserve on vLLM and vllm serve...")
    mesh = start_mesh(scratch / "vllm-mesh", max_queue=64, config=vllm_mesh_config(scratch, model))
    peer = None
    try:
        peer = start_vllm_serve(model, SLOTS, CONTEXT_LENGTH, KV_CACHE_BYTES, scratch / "vllm-serve.log")
        grpc_client = MeshGrpcClient(mesh.ports["edge_https"], mesh.state_dir / "certs" / "ca.pem", mesh.api_key)
        grpc_client.name = "meshserve gRPC (vLLM)"
        clients = [
            MeshOpenAIClient(mesh.ports["edge_http"], mesh.api_key, MODEL, "meshserve OpenAI (vLLM)"),
            grpc_client,
            PeerClient(peer.port, VLLM_SERVE, MODEL),
        ]
        for client in clients:
            client.stream(4)  # warm-up
        summaries, _ = interleaved_rounds(clients, workload, mesh)
    finally:
        mesh.stop()
        if peer is not None:
            peer.stop()
    results = combine(summaries)
    return {"model": MODEL, "slots": SLOTS, "results": results, "ratios_to_vllm_serve": ratios_to(results, VLLM_SERVE)}


def describe(comparison: dict) -> str:
    if "skipped" in comparison:
        return f"vLLM against vllm serve: skipped ({comparison['skipped']})"
    results, ratios = comparison["results"], comparison["ratios_to_vllm_serve"]
    lines = [f"vLLM against vllm serve ({comparison['model']}, {comparison['slots']} sequences; medians over rounds, "
             "[least, most]):"]  # fmt: skip
    for concurrency in sorted({c for figures in results.values() for c in figures}):
        for system, figures in results.items():
            cell, ratio = figures[concurrency], ratios[system][concurrency]
            ttft_ms = 1000 * (cell["ttft"]["p50"] or 0)
            lines.append(f"  c={concurrency:<3} {system:<26} {throughput_text(cell):>20} tok/s  "
                         f"{ratio_text(ratio):>19} vllm serve  TTFT p50 {ttft_ms:7.1f} ms  "
                         f"failed {cell['failures']}")  # fmt: skip
    return "\n".join(lines)
