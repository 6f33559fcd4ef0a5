"""The servers under test, started as a user starts them, and the CPU time their processes use."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port_block

REPO_ROOT = Path(__file__).resolve().parent.parent
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# The mesh's own processes, by what their command lines say.
# Each role's marker in its command line. "-m gateway " ends with a space so that it does not also match
# the OpenAI front (-m gateway.openai) or the authorization service (-m gateway.auth).
MESH_ROLES = {"envoy": "envoy", "gateway": "-m gateway ", "openai": "-m gateway.openai",
              "auth": "-m gateway.auth", "scheduler": "orchestrator.scheduler",
              "inference": "services.inference", "gpu-monitor": "services.gpu_monitor",
              "jobs": "-m gateway.jobs"}  # fmt: skip


def roles_of(state_dir: Path) -> dict[str, int]:
    """The processes of the mesh whose state is in state_dir, role to pid. A second process of a role (a
    gateway replica, a second model's inference service) is "ROLE-2", and so on, in the order of their pids."""
    found = subprocess.run(["pgrep", "-af", "--", str(state_dir)], capture_output=True, text=True).stdout
    roles: dict[str, int] = {}
    counts: dict[str, int] = {}
    for line in sorted(found.splitlines(), key=lambda line: int(line.split(" ", 1)[0])):
        pid, command = line.split(" ", 1)
        role = next((role for role, marker in MESH_ROLES.items() if marker in command), None)
        if role is None:
            continue
        counts[role] = counts.get(role, 0) + 1
        roles[role if counts[role] == 1 else f"{role}-{counts[role]}"] = int(pid)
    return roles


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


@dataclass
class Mesh:
    process: subprocess.Popen
    state_dir: Path
    ports: dict[str, int]

    @property
    def api_key(self) -> str:
        """The development admin key `meshserve up` issued: every benchmark client sends it."""
        return (self.state_dir / "api-key").read_text().strip()

    def roles(self) -> dict[str, int]:
        """The mesh's processes, role to pid."""
        return roles_of(self.state_dir)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


# The scheduler's budget in the benchmark: far below the host's memory, so its ledger bounds admission.
MEMORY_BUDGET = "3GiB"


def start_mesh(state_dir: Path, max_queue: int, gateway_replicas: int = 1, config: Path | None = None) -> Mesh:
    names = ["edge_http", "edge_https", "edge_admin", "gateway", "scheduler", "gpu_monitor", "openai", "auth",
             "inference_base", "gateway_metrics", "scheduler_metrics", "gpu_monitor_metrics", "openai_metrics",
             "auth_metrics", "jobs_metrics", "inference_metrics_base"]  # fmt: skip
    # The n-th model's services listen on a base port plus n: each base gets a block.
    ports = {name: free_port_block(8 if name.endswith("_base") or name.startswith("gateway") else 1) for name in names}
    env = {**os.environ, "MESHSERVE_STATE_DIR": str(state_dir), "MESHSERVE_MAX_QUEUE": str(max_queue),
           "MESHSERVE_GATEWAY_REPLICAS": str(gateway_replicas),
           "MESHSERVE_SCHEDULER_MEMORY_BUDGET": MEMORY_BUDGET,
           **{f"MESHSERVE_{name.upper()}_PORT": str(port) for name, port in ports.items()}}  # fmt: skip
    if config is not None:
        env["MESHSERVE_CONFIG"] = str(config)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "up"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for_output(process, b"Press Ctrl-C to stop.", timeout=300)
    return Mesh(process, state_dir, ports)


def _wait_for_output(process: subprocess.Popen, marker: bytes, timeout: float) -> None:
    output, deadline = b"", time.monotonic() + timeout
    while marker not in output:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([process.stderr], [], [], remaining)[0]:
            raise TimeoutError(f"the mesh did not start: {output.decode(errors='replace')}")
        chunk = os.read(process.stderr.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"the mesh exited: {output.decode(errors='replace')}")
        output += chunk
