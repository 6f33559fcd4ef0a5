"""The mesh while its PostgreSQL is down (seed 001's third failure mode).

The jobs API refuses submissions with 503 and Retry-After, still answers for known jobs, and loses nothing
already acknowledged. At the door, keys read in the last minutes still work on every surface, a key never
read is refused with 503, and the audit records of what was served meanwhile are written once the store is
back. The store comes back by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import bearer, create_key
from tests.e2e.jobs_support import JobsClient, jobs_mesh, prompt
from tests.e2e.surfaces import SURFACES, ask
from tests.e2e.test_identity_audit import records_appear
from tests.otlp_receiver import OtlpReceiver
from tests.postgres import PostgresServer


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver) -> Iterator[tuple[PostgresServer, Mesh]]:
    with PostgresServer() as server, jobs_mesh(tmp_path_factory.mktemp("store-outage"), traces,
                                               server.create_database()) as mesh:  # fmt: skip
        yield server, mesh


def test_a_database_outage_refuses_submissions_keeps_status_and_loses_nothing(
    outage: tuple[PostgresServer, Mesh],
) -> None:
    server, mesh = outage
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


def test_at_the_door_recent_keys_work_unread_ones_get_503_and_audit_records_wait(
    outage: tuple[PostgresServer, Mesh],
) -> None:
    server, mesh = outage
    key_id, recent = create_key(mesh, "--scopes", "inference")
    _, unread = create_key(mesh, "--scopes", "inference")
    assert [ask(mesh, surface, bearer(recent)).status for surface in SURFACES] == [200, 200, 200]

    server.stop()
    try:
        served_meanwhile = [ask(mesh, surface, bearer(recent)) for surface in SURFACES]
        assert [answer.status for answer in served_meanwhile] == [200, 200, 200], served_meanwhile
        for surface in SURFACES:
            refused = ask(mesh, surface, bearer(unread))
            assert (refused.status, refused.reason) == (503, "CREDENTIAL_STORE_UNAVAILABLE"), refused
            assert refused.retry_after_seconds is not None and refused.retry_after_seconds >= 1, refused
    finally:
        server.resume()
    # Written from memory once the store is back: the three served before the outage and the three during it.
    records = records_appear(mesh, key_id, 6)
    assert {answer.trace_id for answer in served_meanwhile} <= {record["trace_id"] for record in records}
    assert ask(mesh, "rest", bearer(unread)).status == 200
