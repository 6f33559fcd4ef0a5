"""The jobs API while its PostgreSQL is down (seed 001's third failure mode): submissions are refused with
503 and Retry-After, known jobs can still be read, the store comes back by itself, and nothing already
acknowledged is lost."""

from __future__ import annotations

import time

import pytest

from tests.e2e.jobs_support import JobsClient, jobs_mesh, prompt
from tests.otlp_receiver import OtlpReceiver
from tests.postgres import PostgresServer


def test_a_database_outage_refuses_submissions_keeps_status_and_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver
) -> None:
    with PostgresServer() as server, jobs_mesh(tmp_path_factory.mktemp("jobs-outage"), traces,
                                               server.create_database()) as mesh:  # fmt: skip
        client = JobsClient.with_new_key(mesh)
        known = client.submitted(prompt("Hi"))
        assert client.wait_until(known)["state"] == "JOB_STATE_COMPLETED"
        acknowledged = [client.submitted(prompt(f"Count to {n}:", 16)) for n in range(3)]

        server.stop()
        refused = client.submit(prompt("Hi"))
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["details"][0]["reason"] == "STORE_UNAVAILABLE"
        # A job the gateway has seen is still answered, as it last saw it.
        assert client.job(known)["state"] == "JOB_STATE_COMPLETED"

        server.resume()
        deadline = time.monotonic() + 60
        while (reply := client.submit(prompt("Hi again"))).status_code != 200:
            assert reply.status_code == 503, reply.text
            assert time.monotonic() < deadline, "the store did not come back within 60 s"
            time.sleep(0.5)
        for task_id in [*acknowledged, reply.json()["task_id"]]:
            assert client.wait_until(task_id, within=180)["state"] == "JOB_STATE_COMPLETED"
