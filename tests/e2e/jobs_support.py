"""The jobs API from a client's side, over REST at the edge: submit, follow, cancel, and wait for an end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.identity_support import bearer, create_key
from tests.otlp_receiver import OtlpReceiver
from tests.support import write_model_config

FINAL_STATES = frozenset({"JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})
# A job of a few tokens ends within this on a busy machine, queue included.
JOB_ENDS_WITHIN_SECONDS = 120.0
# Leases short enough that a crashed runner's jobs come back within seconds.
FAST_RUNNER_ENV = {
    "MESHSERVE_JOBS_LEASE_SECONDS": "4",
    "MESHSERVE_JOBS_HEARTBEAT_SECONDS": "0.5",
    "MESHSERVE_JOBS_CONCURRENCY": "2",
}


@contextmanager
def jobs_mesh(directory: Path, traces: OtlpReceiver, database_url: str = "", **env: str) -> Iterator[Mesh]:
    config = write_model_config(directory, context_length=1024, slots=2)
    settings = {**FAST_RUNNER_ENV, "MESHSERVE_SCHEDULER_MEMORY_BUDGET": "3GiB", **env}
    if database_url:
        settings["MESHSERVE_DATABASE_URL"] = database_url
    with running_mesh(directory, config, traces, settings) as started:
        yield started


class JobsClient:
    """One key's view of the jobs API."""

    def __init__(self, mesh: Mesh, key: str) -> None:
        self.mesh = mesh
        self.key = key
        self.http = httpx.Client(base_url=mesh.http, headers=bearer(key), timeout=60)

    @classmethod
    def with_new_key(cls, mesh: Mesh, scopes: str = "jobs", *options: str) -> JobsClient:
        return cls(mesh, create_key(mesh, "--scopes", scopes, *options)[1])

    @property
    def key_id(self) -> str:
        return self.key.split("_")[1]

    def submit(self, request: dict[str, Any], **params: Any) -> httpx.Response:
        return self.http.post("/v1/async/submit", json=request, params=params)

    def submitted(self, request: dict[str, Any], **params: Any) -> str:
        reply = self.submit(request, **params)
        assert reply.status_code == 200, reply.text
        return reply.json()["task_id"]

    def status(self, task_id: str) -> httpx.Response:
        return self.http.get(f"/v1/async/status/{task_id}")

    def job(self, task_id: str) -> dict[str, Any]:
        reply = self.status(task_id)
        assert reply.status_code == 200, reply.text
        return reply.json()["job"]

    def result(self, task_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/v1/async/result/{task_id}")
        assert reply.status_code == 200, reply.text
        return reply.json()["result"]

    def cancel(self, task_id: str) -> httpx.Response:
        return self.http.post(f"/v1/async/cancel/{task_id}")

    def submit_batch(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post("/v1/async/submit-batch", json=body)

    def batch_submitted(self, lines: list[dict[str, Any]], **fields: Any) -> str:
        reply = self.submit_batch({"lines": lines, **fields})
        assert reply.status_code == 200, reply.text
        return reply.json()["batch_id"]

    def batch(self, batch_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/v1/async/batch-status/{batch_id}")
        assert reply.status_code == 200, reply.text
        return reply.json()["batch"]

    def jobs(self, **params: Any) -> list[dict[str, Any]]:
        reply = self.http.get("/v1/async/jobs", params=params)
        assert reply.status_code == 200, reply.text
        return reply.json()["jobs"]

    def wait_until(self, task_id: str, states: frozenset[str] = FINAL_STATES,
                   within: float = JOB_ENDS_WITHIN_SECONDS) -> dict[str, Any]:  # fmt: skip
        """Polls the job until it is in one of `states`; fails the test past `within`."""
        return self._poll(f"/v1/async/status/{task_id}", "job", lambda job: job["state"] in states, within)

    def wait_for_batch(self, batch_id: str, within: float = JOB_ENDS_WITHIN_SECONDS) -> dict[str, Any]:
        """Polls the batch until every line is in a final state."""
        ended = lambda batch: batch["queued"] == batch["running"] == 0  # noqa: E731
        return self._poll(f"/v1/async/batch-status/{batch_id}", "batch", ended, within)

    def _poll(self, path: str, field: str, done: Callable[[dict[str, Any]], bool], within: float) -> dict[str, Any]:
        # A 503 is a part of the mesh restarting, which a client waits out, as it would in production.
        deadline, last = time.monotonic() + within, None
        while True:
            reply = self.http.get(path)
            assert reply.status_code in (200, 503), reply.text
            if reply.status_code == 200:
                last = reply.json()[field]
                if done(last):
                    return last
            assert time.monotonic() < deadline, f"{path} not done after {within:.0f}s: {last or reply.text}"
            time.sleep(0.2)


def prompt(text: str, max_tokens: int = 4, **fields: Any) -> dict[str, Any]:
    return {"prompt": text, "max_tokens": max_tokens, "temperature": 0, **fields}
