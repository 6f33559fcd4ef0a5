"""Jobs survive crashes: SIGKILL any one process mid-batch, or the whole mesh, and every job still ends.

Delivery is at least once: a job cut by a crash runs again from the start. Without a crash, two runners on
one PostgreSQL share the queue and run each job exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.jobs_support import JobsClient, jobs_mesh, prompt
from tests.e2e.test_mesh_failures import GATEWAY, INFERENCE, pid_of
from tests.otlp_receiver import OtlpReceiver
from tests.support import REPO_ROOT

SCHEDULER = ("orchestrator.scheduler", "scheduler")
LINES = 6
# Each line runs for a second or more, so a kill lands while some run and some wait.
LINE_TOKENS = 48


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver) -> Iterator[Mesh]:
    with jobs_mesh(tmp_path_factory.mktemp("jobs-crashes"), traces) as started:
        yield started


def runner_pid(mesh: Mesh) -> int:
    pattern = f"gateway.jobs .*--metrics-listen 127.0.0.1:{mesh.port('jobs_metrics')}"
    pids = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
    assert len(pids) == 1, pids
    return int(pids[0])


def batch_of(client: JobsClient, tag: str) -> str:
    lines = [{"custom_id": f"{tag}-{n}", "request": prompt(f"Write a poem about {tag} number {n}.", LINE_TOKENS)}
             for n in range(LINES)]  # fmt: skip
    return client.batch_submitted(lines)


def wait_until_some_ran(client: JobsClient, batch_id: str) -> None:
    """Until a line has completed and another runs: the kill lands mid-batch."""
    deadline = time.monotonic() + 120
    while True:
        batch = client.batch(batch_id)
        if batch["completed"] >= 1 and batch["running"] >= 1:
            return
        assert batch["queued"] + batch["running"] > 0, f"the batch ended before the kill: {batch}"
        assert time.monotonic() < deadline, f"the batch never got going: {batch}"
        time.sleep(0.1)


def every_line_completed(client: JobsClient, batch_id: str, most_attempts: int) -> None:
    final = client.wait_for_batch(batch_id, within=240)
    assert final["completed"] == LINES, final
    lines = client.jobs(batch_id=batch_id)
    assert all(client.result(line["task_id"])["text"] for line in lines)
    assert max(line["attempts"] for line in lines) <= most_attempts, lines


@pytest.mark.parametrize(
    ("victim", "most_attempts"),
    [("job runner", 2), ("gateway", 1), ("scheduler", 1), ("inference", 1)],
)
def test_a_process_killed_mid_batch_leaves_no_job_lost_or_stuck(mesh: Mesh, victim: str, most_attempts: int) -> None:
    client = JobsClient.with_new_key(mesh)
    batch_id = batch_of(client, victim.replace(" ", "-"))
    wait_until_some_ran(client, batch_id)
    children = {"gateway": GATEWAY, "scheduler": SCHEDULER, "inference": INFERENCE}
    pid = runner_pid(mesh) if victim == "job runner" else pid_of(mesh, children[victim])
    os.kill(pid, signal.SIGKILL)
    # A dead runner's lines come back when its leases run out; the others' runs fail and are tried again
    # under the same lease, which the runner keeps alive.
    every_line_completed(client, batch_id, most_attempts)
    mesh.wait_healthy(timeout=120)


def test_the_whole_mesh_killed_mid_batch_resumes_when_it_starts_again(
    tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver
) -> None:
    directory = tmp_path_factory.mktemp("jobs-restart")
    with jobs_mesh(directory, traces) as first:
        client = JobsClient.with_new_key(first)
        batch_id = batch_of(client, "restart")
        wait_until_some_ran(client, batch_id)
        kill_everything(first)
    with jobs_mesh(directory, traces) as second:
        every_line_completed(JobsClient(second, client.key), batch_id, most_attempts=2)


def kill_everything(mesh: Mesh) -> None:
    """SIGKILL the launcher and every process of the mesh at once: a power cut, not a stop."""
    mesh.process.kill()
    subprocess.run(["pkill", "-KILL", "-f", "--", str(mesh.state_dir)], check=False)
    mesh.process.wait(30)


def test_two_runners_on_postgresql_run_each_job_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver, postgres_server
) -> None:
    database_url = postgres_server.create_database()
    with jobs_mesh(tmp_path_factory.mktemp("jobs-two-runners"), traces, database_url) as mesh:
        with second_runner(mesh, database_url) as second_log:
            client = JobsClient.with_new_key(mesh)
            lines = [{"custom_id": f"once-{n}", "request": prompt(f"{n} + 1 =", 2)} for n in range(24)]
            batch_id = client.batch_submitted(lines)
            final = client.wait_for_batch(batch_id, within=240)
        assert final["completed"] == 24, final
        jobs = client.jobs(batch_id=batch_id)
        assert all(job["attempts"] == 1 for job in jobs), jobs
        ids = {job["task_id"] for job in jobs}
        by_first = completions_in(mesh.log("jobs")) & ids
        by_second = completions_in(second_log.read_text()) & ids
        assert by_first and by_second, "both runners take work"
        assert by_first.isdisjoint(by_second) and by_first | by_second == ids


def completions_in(log: str) -> set[str]:
    return {line.split("job ")[1].split(" ")[0] for line in log.splitlines() if "completed after" in line}


class second_runner:  # noqa: N801 (used as a context manager, named for what it holds)
    """A second job runner process on the mesh's gateway and database, as a second node would run."""

    def __init__(self, mesh: Mesh, database_url: str) -> None:
        tls = mesh.identity("jobs")
        self._log = mesh.state_dir / "logs" / "jobs-second.log"
        self._argv = [sys.executable, "-m", "gateway.jobs", "--gateway", f"127.0.0.1:{mesh.port('gateway')}",
                      "--database-url", database_url, "--worker", "second", "--concurrency", "2",
                      "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca)]  # fmt: skip
        self._env = {**mesh.env, "OTEL_SDK_DISABLED": "true"}

    def __enter__(self) -> Path:
        with self._log.open("ab") as output:
            self._process = subprocess.Popen(self._argv, cwd=REPO_ROOT, env=self._env, stdout=output, stderr=output)
        return self._log

    def __exit__(self, *_exc_info: object) -> None:
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
