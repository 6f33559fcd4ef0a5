"""The jobs API of seed 001 on the real mesh, once on SQLite and once on a real PostgreSQL: submit, follow,
read the result, cancel, batches, idempotency keys, windows, and who may see what."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import bearer
from tests.e2e.jobs_support import JobsClient, prompt
from tests.e2e.test_identity_audit import audit_of
from tests.e2e.test_mesh_metrics import delta, metrics
from tests.e2e.test_mesh_scheduling import wait_for

# Long enough to still run when the test looks, however fast the machine: a few seconds of tokens.
LONG = 400


@pytest.fixture()
def mesh(jobs_backend_mesh: Mesh) -> Mesh:
    return jobs_backend_mesh


@pytest.fixture()
def client(mesh: Mesh) -> JobsClient:
    return JobsClient.with_new_key(mesh)


def test_a_job_is_queued_then_runs_and_its_result_can_be_read(client: JobsClient) -> None:
    reply = client.submit(prompt("Count: 1, 2, 3,", max_tokens=6))
    assert reply.status_code == 200, reply.text
    acknowledged = reply.json()
    assert acknowledged["status"] == "JOB_STATE_QUEUED" and acknowledged["position"] >= 0
    job = client.wait_until(acknowledged["task_id"])
    assert job["state"] == "JOB_STATE_COMPLETED", job
    assert job["attempts"] == 1 and job["priority"] == "PRIORITY_LOW" and job["model"] == "gemma-3-270m"
    assert job["finished_at"] >= job["created_at"]
    result = client.result(acknowledged["task_id"])
    assert result["state"] == "JOB_STATE_COMPLETED" and result["text"]
    assert result["usage"]["output_tokens"] == 6 and result["finish_reason"] == "FINISH_REASON_LENGTH"
    # The same request, asked synchronously, gives the same text: a job is the same generation.
    sync = client.mesh.post_generate(prompt("Count: 1, 2, 3,", max_tokens=6))
    assert sync.text == result["text"]


def test_a_batch_reports_its_progress_and_every_line_ends(client: JobsClient) -> None:
    lines = [{"custom_id": f"line-{n}", "request": prompt(f"{n} + {n} =")} for n in range(4)]
    batch_id = client.batch_submitted(lines)
    assert client.batch(batch_id)["total"] == 4
    final = client.wait_for_batch(batch_id)
    assert final["completed"] == 4 and final["progress_percent"] == 100.0, final
    listed = client.jobs(batch_id=batch_id)
    assert sorted(job["custom_id"] for job in listed) == [f"line-{n}" for n in range(4)]
    assert all(client.result(job["task_id"])["text"] for job in listed)


def test_cancelling_a_batch_stops_what_runs_and_keeps_what_finished(client: JobsClient) -> None:
    quick = client.submitted(prompt("Hi"))
    client.wait_until(quick)
    lines = [{"custom_id": f"long-{n}", "request": prompt("Tell a long story.", max_tokens=LONG)} for n in range(5)]
    batch_id = client.batch_submitted(lines)
    running = client.jobs(batch_id=batch_id)[-1]["task_id"]
    client.wait_until(running, frozenset({"JOB_STATE_RUNNING"}))
    reply = client.http.post(f"/v1/async/batch-cancel/{batch_id}")
    assert reply.status_code == 200, reply.text
    counts = reply.json()["batch"]
    assert counts["queued"] == counts["running"] == 0 and counts["cancelled"] >= 4, counts
    assert client.job(running)["state"] == "JOB_STATE_CANCELLED"
    # The runner's heartbeat sees the cancel and stops the generation: its slot comes back.
    wait_for_free_slots(client.mesh)
    assert client.job(quick)["state"] == "JOB_STATE_COMPLETED"
    assert client.result(quick)["text"]


def test_cancelling_a_running_job_stops_it_and_a_finished_job_stays_as_it_was(client: JobsClient) -> None:
    task_id = client.submitted(prompt("Tell a long story.", max_tokens=LONG))
    client.wait_until(task_id, frozenset({"JOB_STATE_RUNNING"}))
    reply = client.cancel(task_id)
    assert reply.status_code == 200 and reply.json()["job"]["state"] == "JOB_STATE_CANCELLED", reply.text
    wait_for_free_slots(client.mesh)
    assert client.result(task_id) == {"task_id": task_id, "state": "JOB_STATE_CANCELLED", "text": "",
                                      "finish_reason": "FINISH_REASON_UNSPECIFIED", "model": ""}  # fmt: skip
    done = client.submitted(prompt("Hi"))
    client.wait_until(done)
    assert client.cancel(done).json()["job"]["state"] == "JOB_STATE_COMPLETED"


def test_an_idempotency_key_returns_the_first_job_or_conflicts(client: JobsClient, mesh: Mesh) -> None:
    first = client.submit(prompt("Hello"), idempotency_key="nightly-1")
    again = client.submit(prompt("Hello"), idempotency_key="nightly-1")
    assert first.status_code == again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"]
    conflict = client.submit(prompt("Goodbye"), idempotency_key="nightly-1")
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["details"][0]["reason"] == "IDEMPOTENCY_KEY_REUSED"
    # Keys are each caller's own: another key's equal idempotency key is another job.
    other = JobsClient.with_new_key(mesh).submit(prompt("Goodbye"), idempotency_key="nightly-1")
    assert other.status_code == 200 and other.json()["task_id"] != first.json()["task_id"]
    assert len([job for job in client.jobs() if job["task_id"] == first.json()["task_id"]]) == 1


def test_a_caller_sees_only_its_own_jobs_and_batches(client: JobsClient, mesh: Mesh) -> None:
    task_id = client.submitted(prompt("Mine"))
    batch_id = client.batch_submitted([{"request": prompt("Mine too")}])
    stranger = JobsClient.with_new_key(mesh)
    for reply in (
        stranger.status(task_id),
        stranger.http.get(f"/v1/async/result/{task_id}"),
        stranger.cancel(task_id),
        stranger.http.get(f"/v1/async/batch-status/{batch_id}"),
        stranger.http.post(f"/v1/async/batch-cancel/{batch_id}"),
    ):
        assert reply.status_code == 404, reply.text
    assert task_id not in {job["task_id"] for job in stranger.jobs()}
    assert client.wait_until(task_id)["state"] == "JOB_STATE_COMPLETED"


def test_the_jobs_scope_gates_the_jobs_routes(mesh: Mesh) -> None:
    inference_only = JobsClient.with_new_key(mesh, "inference")
    refused = inference_only.submit(prompt("Hi"))
    assert refused.status_code == 403, refused.text
    assert inference_only.http.get("/v1/async/jobs").status_code == 403
    anonymous = JobsClient(mesh, "")
    assert anonymous.http.post("/v1/async/submit", json=prompt("Hi"), headers={"authorization": ""}).status_code == 401
    # The jobs scope alone runs completions through jobs, never synchronously.
    jobs_only = JobsClient.with_new_key(mesh, "jobs")
    assert mesh.post_generate(prompt("Hi"), headers=bearer(jobs_only.key)).status == 403
    assert jobs_only.wait_until(jobs_only.submitted(prompt("Hi")))["state"] == "JOB_STATE_COMPLETED"


def test_every_job_is_audited_from_submission_to_its_run(client: JobsClient, mesh: Mesh) -> None:
    task_id = client.submitted(prompt("Audit me"))
    client.wait_until(task_id)
    client.job(task_id)
    records: list[dict] = []

    def run_and_read_recorded() -> bool:
        records[:] = audit_of(mesh, client.key_id)
        routes = {(record["surface"], record["route"]) for record in records}
        return ("jobs", f"job {task_id}") in routes and ("rest", f"GET /v1/async/status/{task_id}") in routes

    wait_for(run_and_read_recorded, 15.0, f"the run and the read of {task_id} in the audit log", every=0.2)
    routes = {(record["surface"], record["route"]) for record in records}
    assert ("rest", "POST /v1/async/submit") in routes
    run = next(record for record in records if record["route"] == f"job {task_id}")
    assert run["outcome"] == "ok" and run["output_tokens"] == 4 and run["priority"] == "LOW"


def test_bad_submissions_are_refused_with_the_reason_and_nothing_is_stored(client: JobsClient) -> None:
    cases = [
        (client.submit(prompt("Hi"), completion_window_seconds=-1), 400, "INVALID_COMPLETION_WINDOW"),
        (client.submit(prompt("Hi", model="no-such-model")), 404, "UNKNOWN_MODEL"),
        (client.submit({"max_tokens": 2}), 400, "EMPTY_PROMPT"),
        (client.submit(prompt("Hi", temperature=9)), 400, "INVALID_TEMPERATURE"),
        (client.submit_batch({"lines": []}), 400, "EMPTY_BATCH"),
        (client.submit_batch({"lines": [{"custom_id": "a", "request": prompt("x")}] * 2}), 400, "DUPLICATE_CUSTOM_ID"),
        (client.submit_batch({"lines": [{"request": prompt("x")}, {"request": {"prompt": ""}}]}), 400, "EMPTY_PROMPT"),
        (client.http.get("/v1/async/status/job_nope"), 404, "JOB_NOT_FOUND"),
        (client.http.get("/v1/async/jobs", params={"limit": 5000}), 400, "INVALID_LIMIT"),
    ]
    for reply, status, reason in cases:
        assert reply.status_code == status, (reason, reply.text)
        assert reply.json()["details"][0]["reason"] == reason, reply.text
    not_json = client.http.post("/v1/async/submit", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 400, not_json.text
    assert client.jobs() == []


def test_a_job_still_queued_when_its_window_ends_expires(client: JobsClient) -> None:
    # The runner runs two jobs at once here: two long ones keep it busy past the short job's window.
    blockers = [client.submitted(prompt("Tell a long story.", max_tokens=LONG)) for _ in range(2)]
    for blocker in blockers:
        client.wait_until(blocker, frozenset({"JOB_STATE_RUNNING"}))
    short = client.submitted(prompt("Hi"), completion_window_seconds=1)
    expired = client.wait_until(short)
    assert expired["state"] == "JOB_STATE_EXPIRED" and expired["attempts"] == 0, expired
    for blocker in blockers:
        client.cancel(blocker)
    wait_for_free_slots(client.mesh)


def test_finished_jobs_are_deleted_after_the_retention_time(client: JobsClient) -> None:
    task_id = client.submitted(prompt("Hi"))
    client.wait_until(task_id)
    wait_for(lambda: client.status(task_id).status_code != 200, 90.0,
             "the deletion of a job finished more than 30 s ago", every=1.0)  # fmt: skip
    assert client.status(task_id).json()["details"][0]["reason"] == "JOB_NOT_FOUND"


def wait_for_free_slots(mesh: Mesh, within: float = 30.0) -> None:
    """Until no slot is held: a cancelled job's generation has stopped and given its slot back."""
    wait_for(lambda: held_slots(mesh) == 0, within, "the release of every slot", every=0.2)


def held_slots(mesh: Mesh) -> int:
    status, state = mesh.get_json("/v1/scheduler/state")
    assert status == 200, state
    return sum(endpoint["used_slots"] for endpoint in state["endpoints"])


def test_interactive_work_recalls_a_running_job_which_then_still_completes(client: JobsClient) -> None:
    before = metrics(client.mesh, "jobs_metrics")
    task_id = client.submitted(prompt("Tell a long story.", max_tokens=LONG))
    client.wait_until(task_id, frozenset({"JOB_STATE_RUNNING"}))
    # The job holds a slot of the device; a NORMAL request takes it back, and is served.
    interactive = client.mesh.post_generate(prompt("Hi", max_tokens=4))
    assert interactive.status == 200 and interactive.text
    recalls = lambda: delta(before, metrics(client.mesh, "jobs_metrics"),  # noqa: E731
                            "meshserve_jobs_generation_retries_total", reason="PREEMPTED")  # fmt: skip
    wait_for(lambda: recalls() >= 1, 30.0, "the runner hearing its job's slot was recalled", every=0.2)
    job = client.wait_until(task_id, within=240)
    assert job["state"] == "JOB_STATE_COMPLETED" and job["attempts"] == 1, job
    assert client.result(task_id)["usage"]["output_tokens"] == LONG
