"""Corpora of bad input on the native REST API and on gRPC, through the whole mesh.

Every case gets a 4xx (REST) or a client status (gRPC), never a 5xx, INTERNAL or UNKNOWN; no service
crashes or restarts on the way, and the mesh serves afterwards. The OpenAI API's corpus is in
test_openai_errors.py, where each case also names its parameter.
"""

from __future__ import annotations

import json
import struct
import subprocess

import grpc
import httpx
import pytest
from google.protobuf.internal.encoder import _VarintBytes

from tests.e2e.conftest import Mesh

MODEL = "gemma-3-270m"
GENERATE = {"prompt": "Hi", "model": MODEL, "max_tokens": 2}
INVALID_UTF8 = b"\xc3\x28\xff\xfe"
# What a bad request may be answered with over gRPC: the caller's fault, never the mesh's.
CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
}


def generate(**changes: object) -> dict:
    return {**GENERATE, **changes}


def nested(depth: int) -> bytes:
    return b'{"prompt": "Hi", "x": ' + b"[" * depth + b"]" * depth + b"}"


# (what is wrong, method, path, body: dict, bytes or None, extra headers)
REST_CORPUS = [
    ("a truncated object", "POST", "/v1/generate", b'{"prompt": "Hi",', {}),
    ("not JSON", "POST", "/v1/generate", b"not json", {}),
    ("an empty body", "POST", "/v1/generate", b"", {}),
    ("a JSON array", "POST", "/v1/generate", b"[1, 2, 3]", {}),
    ("a JSON string", "POST", "/v1/generate", b'"Hi"', {}),
    ("a JSON null", "POST", "/v1/generate", b"null", {}),
    ("invalid UTF-8 in the prompt", "POST", "/v1/generate", b'{"prompt": "' + INVALID_UTF8 + b'"}', {}),
    ("invalid UTF-8 in the model", "POST", "/v1/generate", b'{"prompt": "Hi", "model": "' + INVALID_UTF8 + b'"}', {}),
    ("JSON nested 10,000 deep", "POST", "/v1/generate", nested(10_000), {}),
    ("a duplicated key with another type", "POST", "/v1/generate", b'{"prompt": "Hi", "prompt": 5}', {}),
    ("the prompt a number", "POST", "/v1/generate", generate(prompt=5), {}),
    ("the prompt an object", "POST", "/v1/generate", generate(prompt={"text": "Hi"}), {}),
    ("the prompt a list", "POST", "/v1/generate", generate(prompt=["Hi"]), {}),
    ("an empty prompt", "POST", "/v1/generate", generate(prompt=""), {}),
    ("no prompt at all", "POST", "/v1/generate", {"model": MODEL}, {}),
    ("a prompt and messages", "POST", "/v1/generate",
     generate(messages=[{"role": "CHAT_ROLE_USER", "content": "Hi"}]), {}),
    ("a prompt past the context", "POST", "/v1/generate", generate(prompt="lighthouse " * 1500), {}),
    ("an unknown model", "POST", "/v1/generate", generate(model="no-such-model"), {}),
    ("an unknown fallback model", "POST", "/v1/generate", generate(model="nope", fallback_models=["nope-2"]), {}),
    ("the model a number", "POST", "/v1/generate", generate(model=7), {}),
    ("max_tokens zero", "POST", "/v1/generate", generate(max_tokens=0), {}),
    ("max_tokens negative", "POST", "/v1/generate", generate(max_tokens=-5), {}),
    ("max_tokens past int32", "POST", "/v1/generate", generate(max_tokens=2**40), {}),
    ("max_tokens a fraction", "POST", "/v1/generate", generate(max_tokens=1.5), {}),
    ("max_tokens a word", "POST", "/v1/generate", generate(max_tokens="many"), {}),
    ("temperature above 2", "POST", "/v1/generate", generate(temperature=9), {}),
    ("temperature negative", "POST", "/v1/generate", generate(temperature=-1), {}),
    ("temperature NaN", "POST", "/v1/generate", generate(temperature="NaN"), {}),
    ("temperature infinite", "POST", "/v1/generate", generate(temperature="Infinity"), {}),
    ("temperature past a float", "POST", "/v1/generate", generate(temperature=1e39), {}),
    ("top_p zero", "POST", "/v1/generate", generate(top_p=0), {}),
    ("top_p above 1", "POST", "/v1/generate", generate(top_p=1.5), {}),
    ("a negative seed", "POST", "/v1/generate", generate(seed=-1), {}),
    ("a seed past uint64", "POST", "/v1/generate", generate(seed=2**70), {}),
    ("nine stop sequences", "POST", "/v1/generate", generate(stop=[str(n) for n in range(9)]), {}),
    ("100,000 stop sequences", "POST", "/v1/generate", generate(stop=["x"] * 100_000), {}),
    ("an empty stop sequence", "POST", "/v1/generate", generate(stop=[""]), {}),
    ("a stop sequence of 1,000 characters", "POST", "/v1/generate", generate(stop=["s" * 1000]), {}),
    ("stop a number", "POST", "/v1/generate", generate(stop=5), {}),
    ("an unknown priority name", "POST", "/v1/generate", generate(priority="PRIORITY_URGENT"), {}),
    ("a priority number past the enum", "POST", "/v1/generate", generate(priority=99), {}),
    ("a negative priority number", "POST", "/v1/generate", generate(priority=-3), {}),
    ("presence_penalty above 2", "POST", "/v1/generate", generate(presence_penalty=3), {}),
    ("frequency_penalty below -2", "POST", "/v1/generate", generate(frequency_penalty=-2.5), {}),
    ("logprobs above 20", "POST", "/v1/generate", generate(logprobs=21), {}),
    ("logprobs negative", "POST", "/v1/generate", generate(logprobs=-1), {}),
    ("a chat role past the enum", "POST", "/v1/generate",
     {"model": MODEL, "messages": [{"role": 42, "content": "Hi"}]}, {}),
    ("an unknown chat role name", "POST", "/v1/generate",
     {"model": MODEL, "messages": [{"role": "CHAT_ROLE_ROBOT", "content": "Hi"}]}, {}),
    ("messages not a list", "POST", "/v1/generate", {"model": MODEL, "messages": "Hi"}, {}),
    ("a message without content", "POST", "/v1/generate", {"model": MODEL, "messages": [{"role": "CHAT_ROLE_USER"}]},
     {}),
    ("GET on a POST path", "GET", "/v1/generate", None, {}),
    ("DELETE on a GET path", "DELETE", "/v1/mesh/models", None, {}),
    ("an unknown path", "GET", "/v1/no-such-thing", None, {}),
    ("a path that climbs", "GET", "/v1/../../etc/passwd", None, {}),
    ("a job without a request", "POST", "/v1/async/submit", {}, {}),
    ("a job whose request is empty", "POST", "/v1/async/submit", {"request": {"model": MODEL}}, {}),
    ("a job with a bad temperature", "POST", "/v1/async/submit", {"request": generate(temperature=5)}, {}),
    ("a job with a negative window", "POST", "/v1/async/submit",
     {"request": GENERATE, "completion_window_seconds": -1}, {}),
    ("a job request that is not JSON", "POST", "/v1/async/submit", b"{job", {}),
    ("the status of no job", "GET", "/v1/async/status/job_does_not_exist", None, {}),
    ("the result of no job", "GET", "/v1/async/result/job_does_not_exist", None, {}),
    ("cancelling no job", "POST", "/v1/async/cancel/job_does_not_exist", {}, {}),
    ("a batch without lines", "POST", "/v1/async/submit-batch", {"lines": []}, {}),
    ("a batch line with an empty prompt", "POST", "/v1/async/submit-batch",
     {"lines": [{"request": generate(prompt="")}]}, {}),
    ("a batch with a priority past the enum", "POST", "/v1/async/submit-batch",
     {"lines": [{"request": GENERATE}], "priority": 77}, {}),
    ("the status of no batch", "GET", "/v1/async/batch-status/batch_does_not_exist", None, {}),
    ("cancelling no batch", "POST", "/v1/async/batch-cancel/batch_does_not_exist", {}, {}),
    ("a job list page size that is no number", "GET", "/v1/async/jobs?page_size=lots", None, {}),
    ("a key with an unknown scope", "POST", "/v1/admin/keys", {"name": "k", "scopes": ["everything"]}, {}),
    ("a key with no name", "POST", "/v1/admin/keys", {"scopes": ["inference"]}, {}),
    ("a key with a negative rate", "POST", "/v1/admin/keys",
     {"name": "k", "scopes": ["inference"], "requests_per_minute": -1}, {}),
    ("revoking no key", "POST", "/v1/admin/keys/key_does_not_exist:revoke", {}, {}),
    ("rotating no key", "POST", "/v1/admin/keys/key_does_not_exist:rotate", {}, {}),
]  # fmt: skip


@pytest.fixture(scope="module")
def services_before(mesh: Mesh) -> set[int]:
    """The mesh's service processes before the corpus; the last test checks that none was replaced."""
    return children_of(mesh)


def children_of(mesh: Mesh) -> set[int]:
    listed = subprocess.run(["pgrep", "-P", str(mesh.process.pid)], capture_output=True, text=True).stdout
    return {int(pid) for pid in listed.split()}


@pytest.mark.parametrize(("wrong", "method", "path", "body", "headers"), REST_CORPUS, ids=[c[0] for c in REST_CORPUS])
def test_bad_rest_input_is_a_4xx_with_a_status_body(
    mesh: Mesh, services_before: set[int], wrong: str, method: str, path: str, body: object, headers: dict
) -> None:
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"content-type": "application/json", **mesh.auth, **headers}
    reply = httpx.request(method, f"{mesh.http}{path}", content=content, headers=sent, timeout=120)
    assert 400 <= reply.status_code < 500, f"{wrong}: {reply.status_code} {reply.text[:500]}"
    error = reply.json()
    assert error["code"] not in (2, 13) and error["message"], error
    assert error["details"][0]["reason"], error


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _VarintBytes(number << 3 | wire_type) + payload


def string(number: int, value: bytes) -> bytes:
    return field(number, 2, _VarintBytes(len(value)) + value)


def varint(number: int, value: int) -> bytes:
    return field(number, 0, _VarintBytes(value & (2**64 - 1)))


def fixed32_float(number: int, value: float) -> bytes:
    return field(number, 5, struct.pack("<f", value))


def message(number: int, body: bytes) -> bytes:
    return string(number, body)


MODEL_FIELD = string(1, MODEL.encode())
PROMPT = string(2, b"Hi")
TWO_TOKENS = varint(4, 2)
GOOD = MODEL_FIELD + PROMPT + TWO_TOKENS
GENERATE_PATH = "/meshserve.gateway.v1.GatewayService/Generate"
JOBS = "/meshserve.jobs.v1.JobsService/"
IDENTITY = "/meshserve.identity.v1.IdentityService/"
GATEWAY = "/meshserve.gateway.v1.GatewayService/"


def user_message(content: bytes, role: int = 2) -> bytes:
    return message(3, varint(1, role) + string(2, content))


# (what is wrong, method path, serialized request bytes, whether the answer is a stream)
GRPC_CORPUS = [
    ("random bytes", GENERATE_PATH, b"\xff\xff\xff\xff\xff", True),
    ("a truncated varint", GENERATE_PATH, b"\x20\x80", True),
    ("a length past the end", GENERATE_PATH, b"\x12\x10abc", True),
    ("a field numbered zero", GENERATE_PATH, b"\x02\x00", True),
    ("a group that never ends", GENERATE_PATH, b"\x0b" + PROMPT, True),
    ("groups nested 10,000 deep", GENERATE_PATH, b"\x0b" * 10_000 + b"\x0c" * 10_000, True),
    ("the prompt sent as a varint", GENERATE_PATH, MODEL_FIELD + varint(2, 5), True),
    ("a wire type that does not exist", GENERATE_PATH, MODEL_FIELD + PROMPT + b"\x27", True),
    ("invalid UTF-8 in the prompt", GENERATE_PATH, MODEL_FIELD + string(2, INVALID_UTF8), True),
    ("invalid UTF-8 in the model", GENERATE_PATH, string(1, INVALID_UTF8) + PROMPT, True),
    ("invalid UTF-8 in a stop sequence", GENERATE_PATH, GOOD + string(8, INVALID_UTF8), True),
    ("invalid UTF-8 in a fallback model", GENERATE_PATH, GOOD + string(10, INVALID_UTF8), True),
    ("invalid UTF-8 in a message", GENERATE_PATH, MODEL_FIELD + user_message(INVALID_UTF8), True),
    ("100,000 stop sequences", GENERATE_PATH, GOOD + string(8, b"x") * 100_000, True),
    ("10,000 fallback models", GENERATE_PATH, GOOD + string(10, b"m") * 10_000, True),
    ("50,000 messages", GENERATE_PATH, MODEL_FIELD + user_message(b"Hi") * 50_000, True),
    ("a priority past the enum", GENERATE_PATH, GOOD + varint(9, 99), True),
    ("a negative priority", GENERATE_PATH, GOOD + varint(9, -1), True),
    ("a chat role past the enum", GENERATE_PATH, MODEL_FIELD + user_message(b"Hi", role=77), True),
    ("an unset chat role", GENERATE_PATH, MODEL_FIELD + user_message(b"Hi", role=0), True),
    ("no prompt at all", GENERATE_PATH, MODEL_FIELD, True),
    ("an empty request", GENERATE_PATH, b"", True),
    ("a prompt and messages", GENERATE_PATH, GOOD + user_message(b"Hi"), True),
    ("an unknown model", GENERATE_PATH, string(1, b"no-such-model") + PROMPT, True),
    ("max_tokens zero", GENERATE_PATH, MODEL_FIELD + PROMPT + varint(4, 0), True),
    ("max_tokens negative", GENERATE_PATH, MODEL_FIELD + PROMPT + varint(4, -7), True),
    ("max_tokens past the context", GENERATE_PATH, MODEL_FIELD + PROMPT + varint(4, 2**31 - 1), True),
    ("temperature NaN", GENERATE_PATH, GOOD + fixed32_float(5, float("nan")), True),
    ("temperature infinite", GENERATE_PATH, GOOD + fixed32_float(5, float("inf")), True),
    ("temperature negative", GENERATE_PATH, GOOD + fixed32_float(5, -1.0), True),
    ("top_p zero", GENERATE_PATH, GOOD + fixed32_float(6, 0.0), True),
    ("top_p NaN", GENERATE_PATH, GOOD + fixed32_float(6, float("nan")), True),
    ("presence_penalty 5", GENERATE_PATH, GOOD + fixed32_float(11, 5.0), True),
    ("frequency_penalty NaN", GENERATE_PATH, GOOD + fixed32_float(12, float("nan")), True),
    ("logprobs negative", GENERATE_PATH, GOOD + varint(13, -1), True),
    ("logprobs 99", GENERATE_PATH, GOOD + varint(13, 99), True),
    ("nine stop sequences", GENERATE_PATH, GOOD + b"".join(string(8, str(n).encode()) for n in range(9)), True),
    ("an empty stop sequence", GENERATE_PATH, GOOD + string(8, b""), True),
    ("a stop sequence of 1,000 bytes", GENERATE_PATH, GOOD + string(8, b"s" * 1000), True),
    ("ListModels of random bytes", GATEWAY + "ListModels", b"\xff\xfe\xfd", False),
    ("GetGpuStatus of random bytes", GATEWAY + "GetGpuStatus", b"\x0a\xff", False),
    ("GetSchedulerState of random bytes", GATEWAY + "GetSchedulerState", b"\x12\x7f", False),
    ("a method the gateway does not have", GATEWAY + "Frobnicate", b"", False),
    ("a job of random bytes", JOBS + "SubmitJob", b"\xff\x00\xff", False),
    ("a job without a request", JOBS + "SubmitJob", b"", False),
    ("a job whose request has no prompt", JOBS + "SubmitJob", message(1, MODEL_FIELD), False),
    ("a job whose request has invalid UTF-8", JOBS + "SubmitJob", message(1, MODEL_FIELD + string(2, INVALID_UTF8)),
     False),
    ("a job whose request has a priority past the enum", JOBS + "SubmitJob", message(1, GOOD + varint(9, 42)), False),
    ("a job with a negative window", JOBS + "SubmitJob", message(1, GOOD) + varint(3, -5), False),
    ("a job with invalid UTF-8 in its idempotency key", JOBS + "SubmitJob", message(1, GOOD) + string(2, INVALID_UTF8),
     False),
    ("a job of no id", JOBS + "GetJob", b"", False),
    ("a job of an unknown id", JOBS + "GetJob", string(1, b"job_does_not_exist"), False),
    ("a job id of invalid UTF-8", JOBS + "GetJob", string(1, INVALID_UTF8), False),
    ("a job id of 10,000 bytes", JOBS + "GetJob", string(1, b"j" * 10_000), False),
    ("the result of an unknown job", JOBS + "GetJobResult", string(1, b"job_does_not_exist"), False),
    ("cancelling an unknown job", JOBS + "CancelJob", string(1, b"job_does_not_exist"), False),
    ("a batch of no lines", JOBS + "SubmitBatch", b"", False),
    ("a batch of random bytes", JOBS + "SubmitBatch", b"\x0a\xff\xff\xff\x0f", False),
    ("a batch with a priority past the enum", JOBS + "SubmitBatch", message(1, message(1, GOOD)) + varint(2, 55),
     False),
    ("an unknown batch", JOBS + "GetBatch", string(1, b"batch_does_not_exist"), False),
    ("cancelling an unknown batch", JOBS + "CancelBatch", string(1, b"batch_does_not_exist"), False),
    ("a job list of random bytes", JOBS + "ListJobs", b"\xff", False),
    ("a key of random bytes", IDENTITY + "CreateKey", b"\xff\xff", False),
    ("a key with invalid UTF-8 in its name", IDENTITY + "CreateKey", string(1, INVALID_UTF8), False),
    ("revoking an unknown key", IDENTITY + "RevokeKey", string(1, b"key_does_not_exist"), False),
    ("rotating an unknown key", IDENTITY + "RotateKey", string(1, b"key_does_not_exist"), False),
    ("audit records of random bytes", IDENTITY + "ListAuditRecords", b"\xff\x01", False),
]  # fmt: skip


def raw_call(mesh: Mesh, path: str, request: bytes, streaming: bool) -> None:
    """Sends the bytes as they are, as the request message of `path`, through the edge."""
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        if streaming:
            call = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            for _ in call(request, metadata=mesh.grpc_auth, timeout=120):
                pass
        else:
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            call(request, metadata=mesh.grpc_auth, timeout=120)


@pytest.mark.parametrize(("wrong", "path", "request_bytes", "streaming"), GRPC_CORPUS, ids=[c[0] for c in GRPC_CORPUS])
def test_bad_grpc_input_is_a_client_status(
    mesh: Mesh, services_before: set[int], wrong: str, path: str, request_bytes: bytes, streaming: bool
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        raw_call(mesh, path, request_bytes, streaming)
    code = refused.value.code()
    assert code in CLIENT_CODES, f"{wrong}: {code} {refused.value.details()}"
    assert refused.value.details()


def test_the_corpora_are_large_enough_and_the_mesh_serves_after_them(mesh: Mesh, services_before: set[int]) -> None:
    assert len(REST_CORPUS) >= 50 and len(GRPC_CORPUS) >= 50
    # No service crashed and was replaced on the way.
    assert children_of(mesh) == services_before
    reply = mesh.post_generate({"prompt": "Hello", "max_tokens": 3})
    assert reply.events[-1]["usage"]["output_tokens"] == 3
    raw_call(mesh, GENERATE_PATH, GOOD, streaming=True)
    assert mesh.healthy()
