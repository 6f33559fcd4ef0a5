"""Ctrl-C stops every process of the mesh. It ends the shared mesh, so it is marked to run last."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Mesh


def mesh_pids(mesh: Mesh) -> list[int]:
    # Every child's command line names the mesh's state directory (its certificates or bootstrap).
    found = subprocess.run(["pgrep", "-f", "--", str(mesh.state_dir)], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


@pytest.mark.ends_mesh
def test_ctrl_c_stops_every_process(mesh: Mesh) -> None:
    children = mesh_pids(mesh)
    assert len(children) == 8  # monitor, one inference, scheduler, auth, gateway, the OpenAI front, jobs, envoy
    mesh.process.send_signal(signal.SIGINT)
    assert mesh.process.wait(60) == 0
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
