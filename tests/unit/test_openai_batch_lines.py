"""OpenAI's Batch API lines as jobs, and jobs as the batch object and its files: pure, no mesh."""

from __future__ import annotations

import json

import pytest

from gateway.jobs.desk import BatchView
from gateway.jobs.work import JobFailure, JobKind, JobOutcome, encode_failure, encode_outcome
from gateway.openai.batch_lines import (
    batch_object,
    batch_of_file,
    errors_file_id,
    output_file_id,
    output_lines,
    parse_input,
    window_seconds,
)
from gateway.openai.errors import OpenAIError
from services.store import BatchRecord, JobRecord, JobState

CHAT = "/v1/chat/completions"


def line(custom_id: str, url: str = CHAT, **body: object) -> bytes:
    fields = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": fields}).encode() + b"\n"


def test_lines_become_chat_work_at_the_batch_priority() -> None:
    lines = parse_input(line("a", max_tokens=3) + b"\n" + line("b", logprobs=True), CHAT, priority=1)
    assert [custom_id for custom_id, _ in lines] == ["a", "b"]
    (_, first), (_, second) = lines
    assert first.kind is JobKind.CHAT_COMPLETIONS and first.request.max_tokens == 3 and first.request.priority == 1
    assert second.with_logprobs and not first.with_logprobs


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json\n", "line 1 is not JSON"),
        (line("a") + b"[1]\n", "line 2 is not a JSON object"),
        (line("a") + line("a"), "used twice"),
        (line("a", url="/v1/completions"), f"POST {CHAT}"),
        (line("a", stream=True), "cannot stream"),
        (line("a", n=2), "n must be 1"),
        (line("a", temperature="hot"), "temperature"),
        (b"\n\n", "no requests"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_a_bad_line_refuses_the_batch_naming_it(content: bytes, words: str) -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_input(content, CHAT, priority=1)
    assert refused.value.status == 400 and words in refused.value.message


def test_windows_are_whole_hours_minutes_or_seconds() -> None:
    assert [window_seconds(text) for text in ("24h", "30m", "600s")] == [86_400, 1_800, 600]
    for bad in ("forever", "0h", "1.5h", "-1h"):
        with pytest.raises(OpenAIError):
            window_seconds(bad)


def test_a_batchs_own_files_are_named_by_its_id() -> None:
    assert batch_of_file(output_file_id("batch_1")) == ("batch_1", True)
    assert batch_of_file(errors_file_id("batch_1")) == ("batch_1", False)
    assert batch_of_file("file-abc") is None


def view(counts: dict[str, int], cancelled_at: float | None = None) -> BatchView:
    batch = BatchRecord("batch_1", "key:k", sum(counts.values()), "h", 1000.0, expires_at=1000.0 + 86_400,
                        cancelled_at=cancelled_at, endpoint=CHAT, input_file_id="file-in")  # fmt: skip
    return BatchView(batch, {state.value: counts.get(state.value, 0) for state in JobState}, 1010.0)


def test_the_batch_object_follows_its_lines() -> None:
    running = batch_object(view({"QUEUED": 1, "COMPLETED": 1}))
    assert running["status"] == "in_progress" and running["output_file_id"] is None
    assert running["completion_window"] == "24h" and running["request_counts"] == {"total": 2, "completed": 1,
                                                                                   "failed": 0}  # fmt: skip
    done = batch_object(view({"COMPLETED": 2, "FAILED": 1}))
    assert done["status"] == "completed" and done["completed_at"] == 1010
    assert done["output_file_id"] == output_file_id("batch_1") and done["error_file_id"] == errors_file_id("batch_1")
    assert batch_object(view({"COMPLETED": 1, "EXPIRED": 1}))["status"] == "expired"
    cancelled = batch_object(view({"COMPLETED": 1, "CANCELLED": 3}, cancelled_at=1005.0))
    assert cancelled["status"] == "cancelled" and cancelled["request_counts"]["failed"] == 3


def job(custom_id: str, state: JobState, **fields: object) -> JobRecord:
    return JobRecord(f"job_{custom_id}", "key:k", 1, "{}", "h", "{}", 1000.0, 1000.0, state=state,
                     batch_id="batch_1", custom_id=custom_id, **fields)  # type: ignore[arg-type]  # fmt: skip


def test_the_output_file_has_the_completed_lines_and_the_error_file_the_rest() -> None:
    body = {"object": "chat.completion", "choices": []}
    lines = [
        job("ok", JobState.COMPLETED, result=encode_outcome(JobOutcome("hi", "stop", "m", 1, 1, body))),
        job("bad", JobState.FAILED, error=encode_failure(JobFailure("UNKNOWN_MODEL", "no model", 404))),
        job("late", JobState.EXPIRED),
        job("stopped", JobState.CANCELLED),
    ]
    output = [json.loads(text) for text in output_lines(lines, True).splitlines()]
    assert [(each["custom_id"], each["response"]["status_code"], each["response"]["body"]) for each in output] == [
        ("ok", 200, body)
    ]
    errors = {each["custom_id"]: each for each in map(json.loads, output_lines(lines, False).splitlines())}
    assert errors["bad"]["response"]["status_code"] == 404
    assert errors["bad"]["response"]["body"]["error"]["code"] == "model_not_found"
    assert (
        errors["late"]["error"]["code"] == "batch_expired" and errors["stopped"]["error"]["code"] == "batch_cancelled"
    )
