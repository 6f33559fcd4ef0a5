"""OpenAI's Batch API driven by the official `openai` SDK, on SQLite and on PostgreSQL: upload a JSONL file,
create a batch, poll it, and download the output and error files."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import create_key
from tests.e2e.jobs_support import JOB_ENDS_WITHIN_SECONDS
from tests.e2e.test_identity_audit import audit_of
from tests.e2e.test_mesh_scheduling import wait_for

MODEL = "gemma-3-270m"
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def sdk(mesh: Mesh, scopes: str = "jobs") -> openai.OpenAI:
    return sdk_with_key(mesh, create_key(mesh, "--scopes", scopes)[1])


def sdk_with_key(mesh: Mesh, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.http}/v1", api_key=key, max_retries=0, timeout=60)


def chat_line(custom_id: str, content: str, max_tokens: int = 4, model: str = MODEL) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0}  # fmt: skip
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(client: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    uploaded = client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    return uploaded.id


def batch_when_ended(client: openai.OpenAI, batch_id: str, states: frozenset[str] = FINAL):
    deadline = time.monotonic() + JOB_ENDS_WITHIN_SECONDS
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in states:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.3)


def read_jsonl(client: openai.OpenAI, file_id: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
    return {line["custom_id"]: line for line in lines}


def test_the_sdk_uploads_creates_polls_and_downloads_every_custom_id(jobs_backend_mesh: Mesh) -> None:
    key_id, key = create_key(jobs_backend_mesh, "--scopes", "jobs")
    client = sdk_with_key(jobs_backend_mesh, key)
    good = [chat_line(f"req-{n}", f"Say the number {n}.") for n in range(5)]
    unservable = chat_line("req-unknown-model", "Hi", model="no-such-model")
    input_id = upload(client, [*good, unservable])
    batch = client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "nightly"})  # fmt: skip
    assert batch.status == "in_progress" and batch.request_counts.total == 6 and batch.metadata == {"run": "nightly"}
    done = batch_when_ended(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.completed == 5 and done.request_counts.failed == 1
    assert done.completed_at is not None and done.completed_at >= done.created_at
    output = read_jsonl(client, done.output_file_id)
    assert sorted(output) == [f"req-{n}" for n in range(5)]
    for custom_id, line in output.items():
        assert line["error"] is None and line["response"]["status_code"] == 200, line
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL, custom_id
        assert body["choices"][0]["message"]["role"] == "assistant" and body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] == 4
    errors = read_jsonl(client, done.error_file_id)
    assert list(errors) == ["req-unknown-model"]
    failed = errors["req-unknown-model"]["response"]
    assert failed["status_code"] == 404 and failed["body"]["error"]["code"] == "model_not_found", failed
    assert client.batches.list(limit=5).data[0].id == batch.id
    # The batch's requests are audited at the front, and each line's run at the gateway.
    runs: list[dict] = []

    def every_run_recorded() -> bool:
        runs[:] = [record for record in audit_of(jobs_backend_mesh, key_id) if record["surface"] == "jobs"]
        return len(runs) >= 6

    wait_for(every_run_recorded, 15.0, "the run of every line in the audit log", every=0.2)
    routes = {(record["surface"], record["route"]) for record in audit_of(jobs_backend_mesh, key_id)}
    assert ("openai", "POST /v1/files") in routes and ("openai", "POST /v1/batches") in routes
    assert len({run["route"] for run in runs}) == 6


def test_a_text_completions_batch_answers_text_completion_bodies(jobs_backend_mesh: Mesh) -> None:
    client = sdk(jobs_backend_mesh)
    lines = [{"custom_id": "c-1", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 3, "temperature": 0}}]  # fmt: skip
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/completions",
                                  completion_window="1h")  # fmt: skip
    done = batch_when_ended(client, batch.id)
    assert done.status == "completed" and done.error_file_id is None and done.completion_window == "1h"
    body = read_jsonl(client, done.output_file_id)["c-1"]["response"]["body"]
    assert body["object"] == "text_completion" and body["choices"][0]["text"]


def test_cancelling_keeps_what_finished_and_names_what_did_not(jobs_backend_mesh: Mesh) -> None:
    client = sdk(jobs_backend_mesh)
    lines = [chat_line("quick", "Hi"), *(chat_line(f"long-{n}", "Tell a long story.", 400) for n in range(4))]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")  # fmt: skip
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 1, JOB_ENDS_WITHIN_SECONDS,
             "the completion of the first line", every=0.3)  # fmt: skip
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None, cancelled
    output = read_jsonl(client, cancelled.output_file_id)
    assert "quick" in output and output["quick"]["response"]["status_code"] == 200
    errors = read_jsonl(client, cancelled.error_file_id)
    assert set(output) | set(errors) == {"quick", *(f"long-{n}" for n in range(4))}
    assert {line["error"]["code"] for line in errors.values()} == {"batch_cancelled"}


def test_another_key_sees_neither_the_files_nor_the_batches(jobs_backend_mesh: Mesh) -> None:
    owner, stranger = sdk(jobs_backend_mesh), sdk(jobs_backend_mesh)
    input_id = upload(owner, [chat_line("a", "Hi")])
    batch = owner.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        stranger.files.content(input_id)
    with pytest.raises(openai.NotFoundError):
        stranger.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        stranger.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        stranger.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id not in {each.id for each in stranger.batches.list().data}
    done = batch_when_ended(owner, batch.id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.content(done.output_file_id)


def test_the_batch_routes_need_the_jobs_scope(jobs_backend_mesh: Mesh) -> None:
    inference_only = sdk(jobs_backend_mesh, "inference")
    with pytest.raises(openai.PermissionDeniedError):
        inference_only.files.create(file=("requests.jsonl", jsonl([chat_line("a", "Hi")])), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError):
        inference_only.batches.list()


def test_bad_files_and_batches_are_refused_with_the_line_or_field_at_fault(jobs_backend_mesh: Mesh) -> None:
    client = sdk(jobs_backend_mesh)
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("requests.jsonl", jsonl([chat_line("a", "Hi")])), purpose="fine-tune")
    broken = client.files.create(file=("broken.jsonl", jsonl([chat_line("a", "Hi")]) + b"{not json\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="line 2"):
        client.batches.create(input_file_id=broken.id, endpoint="/v1/chat/completions", completion_window="24h")
    twice = upload(client, [chat_line("a", "Hi"), chat_line("a", "Hi again")])
    with pytest.raises(openai.BadRequestError, match="used twice"):
        client.batches.create(input_file_id=twice, endpoint="/v1/chat/completions", completion_window="24h")
    good = upload(client, [chat_line("a", "Hi")])
    with pytest.raises(openai.BadRequestError, match="POST /v1/completions"):
        client.batches.create(input_file_id=good, endpoint="/v1/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=good, endpoint="/v1/chat/completions", completion_window="forever")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    streaming = upload(client, [{**chat_line("s", "Hi"), "body": {**chat_line("s", "Hi")["body"], "stream": True}}])
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.batches.create(input_file_id=streaming, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.list().data == []
