"""A whole mesh started the way a user starts it, `meshserve up`, on free ports, shared by the e2e tests."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.shared.certs import dev_identity
from services.shared.tls import TlsFiles, channel_credentials
from tests.conftest import LOG_TAIL_CHARS, track, untrack
from tests.e2e.sse import OpenStream, SseReply, post_generate
from tests.otlp_receiver import OtlpReceiver
from tests.ports import free_port_block
from tests.postgres import postgres_server  # noqa: F401 (a fixture, found by pytest through this import)
from tests.support import REPO_ROOT, write_model_config

MESHSERVE = [sys.executable, "-m", "orchestrator"]


# Room for every model a test mesh configures on each base port, and for every gateway replica.
BASE_PORT_BLOCK = 8
REPLICATED = ("gateway", "gateway_metrics")
METRICS_PORTS = (
    "gateway_metrics",
    "scheduler_metrics",
    "gpu_monitor_metrics",
    "openai_metrics",
    "auth_metrics",
    "jobs_metrics",
    "inference_metrics_base",
)


@dataclass
class Mesh:
    process: subprocess.Popen
    env: dict[str, str]
    state_dir: Path
    startup_output: str
    traces: OtlpReceiver

    def port(self, name: str) -> int:
        return int(self.env[f"MESHSERVE_{name.upper()}_PORT"])

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port('edge_http')}"

    @property
    def api_key(self) -> str:
        """The development admin key `meshserve up` issued."""
        return (self.state_dir / "api-key").read_text().strip()

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    @property
    def grpc_auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def post_generate(self, body: dict | bytes, headers: dict[str, str] | None = None, **options: Any) -> SseReply:
        """POST /v1/generate on the plain listener, with the development admin key unless `headers` has another."""
        sent = self.auth if headers is None else headers
        return post_generate("127.0.0.1", self.port("edge_http"), body, headers=sent, **options)

    def open_stream(self, body: dict) -> OpenStream:
        return OpenStream("127.0.0.1", self.port("edge_http"), body, headers=self.auth)

    def identity(self, name: str) -> TlsFiles:
        return dev_identity(self.state_dir / "certs", name)

    def channel(self, port_name: str, identity: str) -> grpc.Channel:
        return grpc.secure_channel(f"127.0.0.1:{self.port(port_name)}", channel_credentials(self.identity(identity)))

    def log(self, child: str) -> str:
        return (self.state_dir / "logs" / f"{child}.log").read_text(errors="replace")

    @property
    def name(self) -> str:
        return f"the mesh in {self.state_dir.parent.name}"

    def logs(self) -> str:
        """The end of every service's log, so a failure shows each of them, not only the noisiest."""
        parts = [f"--- meshserve up ---\n{self.startup_output}"]
        for path in sorted((self.state_dir / "logs").glob("*.log")):
            parts.append(f"--- {path.stem} ---\n{path.read_text(errors='replace')[-LOG_TAIL_CHARS // 8 :]}")
        return "\n".join(parts)

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        """GET with the development admin key, unless `headers` say otherwise."""
        request = urllib.request.Request(self.http + path, headers=self.auth if headers is None else headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.http + "/healthz", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise TimeoutError("the mesh did not become healthy again")
            time.sleep(0.1)


def read_until(stream, marker: bytes, timeout: float) -> bytes:
    output, deadline = b"", time.monotonic() + timeout
    while marker not in output:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            raise TimeoutError(f"no {marker!r} after {timeout}s: {output.decode(errors='replace')}")
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            raise EOFError(output.decode(errors="replace"))
        output += chunk
    return output


@pytest.fixture(scope="package")
def traces() -> Iterator[OtlpReceiver]:
    """A real OTLP/gRPC receiver on loopback, where every process of the e2e mesh sends its spans."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="package")
def mesh(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver) -> Iterator[Mesh]:
    directory = tmp_path_factory.mktemp("mesh")
    config = write_model_config(directory, context_length=1024, slots=2)
    # A budget far below the host's memory: the scheduler's ledger, not the machine, bounds admission.
    env = {"MESHSERVE_MAX_QUEUE": "4", "MESHSERVE_SCHEDULER_MEMORY_BUDGET": "3GiB"}
    with running_mesh(directory, config, traces, env) as started:
        yield started


@contextmanager
def running_mesh(directory: Path, config: Path, traces: OtlpReceiver, extra_env: dict[str, str]) -> Iterator[Mesh]:
    """`meshserve up` with the given config on free ports, stopped with Ctrl-C at the end."""
    ports = ["edge_http", "edge_https", "edge_admin", "gateway", "scheduler", "gpu_monitor", "openai", "auth",
             "inference_base"]  # fmt: skip
    env = {
        **os.environ,
        "MESHSERVE_CONFIG": str(config),
        "MESHSERVE_STATE_DIR": str(directory / "state"),
        # The base ports get a block each: the n-th model's services (or gateway replica) listen on the base plus n.
        **{
            f"MESHSERVE_{name.upper()}_PORT": str(
                free_port_block(BASE_PORT_BLOCK if name.endswith("_base") or name in REPLICATED else 1)
            )
            for name in (*ports, *METRICS_PORTS)
        },  # fmt: skip
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{traces.endpoint}",
        # Export within a tenth of a second, so a test need not wait for the default five.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **extra_env,
    }
    process = subprocess.Popen(
        [*MESHSERVE, "up"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    started = Mesh(process, env, directory / "state", "", traces)
    track(started)
    try:
        try:
            started.startup_output = read_until(process.stderr, b"Press Ctrl-C to stop.", timeout=180).decode()
        except (TimeoutError, EOFError) as error:
            raise RuntimeError(f"the mesh did not start: {error}\n{started.logs()}") from None
        yield started
    finally:
        untrack(started)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def jobs_backend_mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver
) -> Iterator[Mesh]:
    """A mesh on each backend, shared by the jobs tests. Finished jobs are kept 30 s here, so that the
    retention test need not wait a day."""
    from tests.e2e.jobs_support import jobs_mesh

    database_url = ""
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_server").create_database()
    directory = tmp_path_factory.mktemp(f"jobs-{request.param}")
    with jobs_mesh(directory, traces, database_url, MESHSERVE_JOBS_RETENTION_SECONDS="30") as started:
        yield started
