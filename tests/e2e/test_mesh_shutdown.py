"""Ctrl-C stops every process of the mesh, and loses no audit record of what it served. It ends the shared
mesh, so it is marked to run last."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import bearer, create_key
from tests.e2e.surfaces import SURFACES, ask


def mesh_pids(mesh: Mesh) -> list[int]:
    # Every child's command line names the mesh's state directory (its certificates or bootstrap).
    found = subprocess.run(["pgrep", "-f", "--", str(mesh.state_dir)], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


@pytest.mark.ends_mesh
def test_ctrl_c_stops_every_process_and_writes_every_audit_record_first(mesh: Mesh) -> None:
    children = mesh_pids(mesh)
    assert len(children) == 8  # monitor, one inference, scheduler, auth, gateway, the OpenAI front, jobs, envoy
    key_id, key = create_key(mesh, "--scopes", "inference")
    answers = [ask(mesh, surface, bearer(key)) for surface in SURFACES for _ in range(2)]
    assert {answer.status for answer in answers} == {200}
    # At once, while the records of the last answers are still queued (they are written every quarter second).
    mesh.process.send_signal(signal.SIGINT)
    assert mesh.process.wait(60) == 0
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
    with sqlite3.connect(mesh.state_dir / "meshserve.db") as database:
        rows = database.execute("SELECT trace_id FROM audit WHERE subject = ?", (f"key:{key_id}",)).fetchall()
    assert sorted(row[0] for row in rows) == sorted(answer.trace_id for answer in answers)
