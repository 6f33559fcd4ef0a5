"""The vLLM figures of bench/timings.py, on the vLLM engine's own inference service and the tiny test Llama.

Batching: eight requests at once against one alone, as a ratio. Cancel to free: a client's cancel until
vLLM has dropped the sequence. Skipped, with the reason in the results, where vLLM is not installed.
"""

from __future__ import annotations

import importlib.util
import signal
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc

from bench.processes import REPO_ROOT
from bench.timings import TimingPlan, cancellations, timed, until
from tests.ports import free_port

# vLLM's sequences at once in its own service, and the tokens of its long, cancelled request.
VLLM_SLOTS = 8
VLLM_LONG_TOKENS = 1500


def vllm_config(directory: Path, model: Path) -> Path:
    path = directory / "vllm.toml"
    path.write_text(f"""
[[models]]
name = "tiny-llama"
engine = "vllm"
path = "{model}"
context_length = 2048
slots = {VLLM_SLOTS}
default_max_tokens = 32
[models.vllm]
kv_cache_bytes = "64MiB"
enforce_eager = true
""")
    return path


def start_vllm_service(directory: Path) -> tuple[subprocess.Popen, grpc.Channel]:
    from tests.tiny_llama import cached_tiny_llama

    port = free_port()
    argv = [sys.executable, "-m", "services.inference", "--config", str(vllm_config(directory, cached_tiny_llama())),
            "--listen", f"127.0.0.1:{port}", "--plaintext"]  # fmt: skip
    with (directory / "vllm.log").open("wb") as log:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    return process, grpc.insecure_channel(f"127.0.0.1:{port}")


def wait_until_serving(process: subprocess.Popen, channel: grpc.Channel, log: Path) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    def serving() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the vLLM inference service exited; see {log}")
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
        except grpc.RpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING

    until(serving, within=300)


def vllm_batching(stub: inference_pb2_grpc.InferenceServiceStub, plan: TimingPlan) -> dict:
    def generate(seed: int) -> None:
        request = inference_pb2.GenerateRequest(prompt="hello world", max_tokens=plan.vllm_tokens, seed=seed)
        replies = list(stub.Generate(request, timeout=300))
        if replies[-1].usage.output_tokens != plan.vllm_tokens:
            raise RuntimeError(f"vLLM generated {replies[-1].usage.output_tokens} of {plan.vllm_tokens} tokens")

    def eight_at_once() -> None:
        with ThreadPoolExecutor(VLLM_SLOTS) as pool:
            list(pool.map(generate, range(VLLM_SLOTS)))

    generate(0)  # warm-up: first-request costs are not what is measured
    one = statistics.median(timed(lambda: generate(1)) for _ in range(plan.vllm_rounds))
    eight = statistics.median(timed(eight_at_once) for _ in range(plan.vllm_rounds))
    return {"one_seconds": one, "eight_seconds": eight, "eight_to_one_ratio": eight / one}


def vllm_timings(directory: Path, plan: TimingPlan) -> dict:
    """The vLLM figures on its own inference service, or why there are none."""
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm is not installed"}
    process, channel = start_vllm_service(directory)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)

    def idle() -> bool:
        activity = stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5).model.activity
        return activity.running_requests == 0 and activity.waiting_requests == 0

    def long_request():
        request = inference_pb2.GenerateRequest(prompt="hello", max_tokens=VLLM_LONG_TOKENS)
        return stub.Generate(request, timeout=300)

    try:
        wait_until_serving(process, channel, directory / "vllm.log")
        batching = vllm_batching(stub, plan)
        return {"batching": batching, "cancel_to_engine_free": cancellations(plan.tries, long_request, idle)}
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
