"""Requests through the edge: REST with server-sent events, the same over TLS, gRPC, and bad input."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.shared.status_details import details_of
from tests.e2e.conftest import MESHSERVE, Mesh
from tests.e2e.sse import post_generate
from tests.support import REPO_ROOT


def test_the_launcher_reports_every_service_serving(mesh: Mesh) -> None:
    assert "every service is SERVING" in mesh.startup_output
    assert "meshserve is up" in mesh.startup_output
    assert mesh.healthy()


def test_rest_generate_streams_server_sent_events(mesh: Mesh) -> None:
    reply = mesh.post_generate({"prompt": "Hello", "max_tokens": 16, "seed": 3})
    assert reply.status == 200 and reply.content_type.startswith("text/event-stream")
    assert len(reply.events) == 17  # one per token, then the closing event
    assert len(reply.text.split()) >= 3
    last = reply.events[-1]
    assert last["finish_reason"] == "FINISH_REASON_LENGTH"
    assert last["usage"] == {"input_tokens": 2, "output_tokens": 16}
    assert all(event["finish_reason"] == "FINISH_REASON_UNSPECIFIED" for event in reply.events[:-1])
    assert all(event["model"] == "gemma-3-270m" for event in reply.events)
    assert reply.arrivals[-1] - reply.arrivals[0] > 0.02  # streamed as produced, not in one lump


def test_rest_generate_works_over_tls_with_the_dev_ca(mesh: Mesh) -> None:
    ca = str(mesh.state_dir / "certs" / "ca.pem")
    reply = post_generate(
        "localhost", mesh.port("edge_https"), {"prompt": "Hello", "max_tokens": 8}, tls_ca=ca, headers=mesh.auth
    )
    assert reply.status == 200
    assert reply.events[-1]["usage"]["output_tokens"] == 8


def test_priority_is_accepted_by_name(mesh: Mesh) -> None:
    body = {"prompt": "Hi", "max_tokens": 2, "priority": "PRIORITY_HIGH", "temperature": 0.0}
    assert mesh.post_generate(body).events[-1]["usage"]["output_tokens"] == 2


def test_models_and_gpu_status_answer_json(mesh: Mesh) -> None:
    status, models = mesh.get_json("/v1/mesh/models")
    assert status == 200
    (model,) = models["models"]
    assert (model["name"], model["state"], model["total_slots"]) == ("gemma-3-270m", "MODEL_STATE_READY", 2)
    assert int(model["memory_footprint_bytes"]) > 0
    status, gpus = mesh.get_json("/v1/gpu/status")
    assert status == 200
    (device,) = gpus["devices"]
    assert device["kind"] == "DEVICE_KIND_HOST"
    assert 0 < int(device["memory_used_bytes"]) <= int(device["memory_total_bytes"])


def test_meshserve_generate_streams_over_grpc(mesh: Mesh) -> None:
    result = subprocess.run(
        [*MESHSERVE, "generate", "Write about the sea.", "--max-tokens", "24", "--seed", "2"],
        cwd=REPO_ROOT, env=mesh.env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.decode().split()) >= 5
    assert b"FINISH_REASON_LENGTH: 6 prompt + 24 generated tokens" in result.stderr


def test_grpc_stubs_reach_the_gateway_through_the_edge(mesh: Mesh) -> None:
    ca = (mesh.state_dir / "certs" / "ca.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(f"localhost:{mesh.port('edge_https')}", credentials) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        replies = list(
            stub.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=4), timeout=30, metadata=mesh.grpc_auth)
        )
        assert replies[-1].usage.output_tokens == 4
        with pytest.raises(grpc.RpcError) as refused:
            request = pb.GenerateRequest(model="no-such-model", prompt="Hello")
            list(stub.Generate(request, timeout=30, metadata=mesh.grpc_auth))
    assert details_of(refused.value).reason == "UNKNOWN_MODEL"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"model": "no-such-model", "prompt": "Hello"}, 404, "UNKNOWN_MODEL"),
        ({"prompt": ""}, 400, "EMPTY_PROMPT"),
        ({"prompt": "Hi", "temperature": 9}, 400, "INVALID_TEMPERATURE"),
        ({"prompt": "Hi", "max_tokens": -5}, 400, "INVALID_MAX_TOKENS"),
        ({"prompt": "lighthouse " * 1500}, 400, "PROMPT_TOO_LONG"),
    ],
)
def test_bad_requests_get_the_documented_status_and_reason(mesh: Mesh, body: dict, status: int, reason: str) -> None:
    reply = mesh.post_generate(body)
    assert reply.status == status, reply.body
    assert f'"reason":"{reason}"' in reply.body.decode()


@pytest.mark.parametrize(
    "body", [b'{"prompt": "Hi",', b"not json", b'{"prompt": 5}', b'{"prompt": "Hi", "priority": "URGENT"}']
)
def test_malformed_json_is_400_with_a_status_body(mesh: Mesh, body: bytes) -> None:
    reply = mesh.post_generate(body)
    assert reply.status == 400
    error = json.loads(reply.body)
    assert error["code"] == 3 and error["message"]
    assert error["details"][0]["reason"] == "MALFORMED_REQUEST"


def test_an_unknown_field_is_ignored_so_a_misspelt_prompt_is_refused_as_empty(mesh: Mesh) -> None:
    # The proto3 JSON mapping (and so Envoy's transcoder) drops unknown fields; the gateway then sees no prompt.
    reply = mesh.post_generate({"promt": "Hello"})
    assert reply.status == 400
    assert json.loads(reply.body)["details"][0]["reason"] == "EMPTY_PROMPT"


def test_the_mesh_still_serves_after_bad_input(mesh: Mesh) -> None:
    reply = mesh.post_generate({"prompt": "Hello", "max_tokens": 3})
    assert reply.events[-1]["usage"]["output_tokens"] == 3


def test_scheduler_state_is_served_over_rest_and_by_meshserve_status(mesh: Mesh) -> None:
    status, state = mesh.get_json("/v1/scheduler/state")
    assert status == 200
    (endpoint,) = state["endpoints"]
    assert (endpoint["model"], endpoint["total_slots"], endpoint["serving"]) == ("gemma-3-270m", 2, True)
    assert state["resident_models"] == ["gemma-3-270m"]
    assert {q["priority"] for q in state["queue"]} == {f"PRIORITY_{p}" for p in ("LOW", "NORMAL", "HIGH", "CRITICAL")}
    assert state["devices"][0]["kind"] == "DEVICE_KIND_HOST"
    result = subprocess.run([*MESHSERVE, "status"], cwd=REPO_ROOT, env=mesh.env, capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "slots 0/2 in use, serving" in result.stdout
    assert "resident models: gemma-3-270m" in result.stdout
    assert "queue: CRITICAL 0, HIGH 0, NORMAL 0, LOW 0" in result.stdout


def test_each_device_reports_the_pressure_level_its_memory_use_gives(mesh: Mesh) -> None:
    status, gpus = mesh.get_json("/v1/gpu/status")
    (device,) = gpus["devices"]
    used = int(device["memory_used_bytes"]) / int(device["memory_total_bytes"])
    # This host's memory use decides it; the level must be the one DESIGN.md's bands give for it.
    expected = "PRESSURE_LEVEL_" + ("LOW" if used < 0.5 else "NORMAL" if used < 0.7 else "HIGH" if used < 0.85
                                    else "CRITICAL" if used < 0.95 else "EMERGENCY")  # fmt: skip
    assert status == 200 and device["pressure_level"] == expected
