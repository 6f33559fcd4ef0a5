"""The README's path: `meshserve up`, then `meshserve generate` streams tokens; Ctrl-C stops everything."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, free_port, write_model_config

MESHSERVE = [sys.executable, "-m", "orchestrator"]


@pytest.fixture(scope="module")
def mesh_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("up")
    return {
        **os.environ,
        "MESHSERVE_CONFIG": str(write_model_config(directory)),
        "MESHSERVE_STATE_DIR": str(directory / "state"),
        "MESHSERVE_INFERENCE_ADDRESS": f"127.0.0.1:{free_port()}",
    }


@pytest.fixture(scope="module")
def launcher(mesh_env: dict[str, str]) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [*MESHSERVE, "up"], cwd=REPO_ROOT, env=mesh_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    output = read_until(process.stderr, b"meshserve is up", timeout=120)
    assert b"SERVING" in output
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def read_until(stream, marker: bytes, timeout: float) -> bytes:
    output, deadline = b"", time.monotonic() + timeout
    while marker not in output:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            raise TimeoutError(f"no {marker!r} after {timeout}s: {output.decode(errors='replace')}")
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            raise EOFError(output.decode(errors="replace"))
        output += chunk
    return output


def test_generate_prints_tokens_as_they_stream(launcher: subprocess.Popen, mesh_env: dict[str, str]) -> None:
    client = subprocess.Popen(
        [*MESHSERVE, "generate", "Write a long story about the sea.", "--max-tokens", "120", "--seed", "1"],
        cwd=REPO_ROOT,
        env=mesh_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reads: list[tuple[float, bytes]] = []
    while chunk := os.read(client.stdout.fileno(), 4096):
        reads.append((time.monotonic(), chunk))
    assert client.wait(30) == 0
    text = b"".join(chunk for _, chunk in reads).decode()
    assert len(text.split()) > 20
    # Printed piece by piece while the model generated, not at once at the end.
    assert len(reads) >= 10
    assert reads[-1][0] - reads[0][0] > 0.2
    assert b"FINISH_REASON_LENGTH: " in client.stderr.read()


def test_bad_input_is_reported_clearly(launcher: subprocess.Popen, mesh_env: dict[str, str]) -> None:
    result = subprocess.run(
        [*MESHSERVE, "generate", "Hi", "--temperature", "7"], cwd=REPO_ROOT, env=mesh_env, capture_output=True
    )
    assert result.returncode == 1
    assert b"INVALID_ARGUMENT INVALID_TEMPERATURE" in result.stderr


def test_ctrl_c_stops_every_process(launcher: subprocess.Popen, mesh_env: dict[str, str]) -> None:
    children = subprocess.run(
        ["pgrep", "-f", "--", f"--listen {mesh_env['MESHSERVE_INFERENCE_ADDRESS']}"], capture_output=True, text=True
    ).stdout.split()
    assert children, "the inference service should be running"
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(30) == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} survived"
