"""The peers meshserve is measured against, each started as its users start it, on the same model file,
slots, threads and machine: llama.cpp's own llama-server, llama-cpp-python's server, and `vllm serve`."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.processes import REPO_ROOT
from services.shared.mesh_config import ModelConfig
from tests.ports import free_port

LLAMA_SERVER = "llama-server"


@dataclass
class Peer:
    name: str
    process: subprocess.Popen
    port: int

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_llama_cpp_server(config: ModelConfig, log_path: Path) -> Peer:
    """llama-cpp-python's server: one request at a time on one context."""
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(config.resolve_model_file()),
            "--n_ctx", str(config.context_length), "--n_threads", str(config.threads),
            "--host", "127.0.0.1", "--port", str(port),
            # By default a new request cuts off the one streaming: answers would end after a few tokens.
            # Without that, requests wait their turn: the unbounded queue its users get under load.
            "--interrupt_requests", "False"]  # fmt: skip
    return _started("llama_cpp.server", argv, port, log_path, "/v1/models")


def start_llama_server(binary: Path, config: ModelConfig, log_path: Path) -> Peer:
    """llama.cpp's llama-server with a slot per meshserve slot, continuous batching on (its default), each
    slot a whole context as meshserve's sequences have, and otherwise its users' defaults."""
    port = free_port()
    argv = [str(binary), "--model", str(config.resolve_model_file()), "--parallel", str(config.slots),
            "--ctx-size", str(config.slots * config.context_length), "--no-kv-unified", "--cont-batching",
            "--threads", str(config.threads), "--threads-batch", str(config.threads),
            "--batch-size", str(config.batch_tokens), "--no-webui",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return _started(LLAMA_SERVER, argv, port, log_path, "/health")


def start_vllm_serve(model: Path, slots: int, context_length: int, kv_cache_bytes: int, log_path: Path) -> Peer:
    """`vllm serve` on a Hugging Face model directory, with meshserve's vLLM settings for the same model."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.vllm_serve", "serve", str(model), "--served-model-name", "tiny-llama",
            "--max-model-len", str(context_length), "--max-num-seqs", str(slots),
            "--kv-cache-memory-bytes", str(kv_cache_bytes), "--enforce-eager",
            "--host", "127.0.0.1", "--port", str(port), "--disable-log-stats"]  # fmt: skip
    return _started("vllm serve", argv, port, log_path, "/v1/models", timeout=600)


def _started(name: str, argv: list[str], port: int, log_path: Path, ready_path: str, timeout: float = 180) -> Peer:
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1):
                return Peer(name, process, port)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log_path}") from None
            time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"{name} did not answer within {timeout:.0f}s; see {log_path}")
