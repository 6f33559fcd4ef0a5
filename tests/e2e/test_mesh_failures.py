"""A dying inference process: the client hears UNAVAILABLE within a second, the launcher restarts it, work resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import grpc
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.shared.status_details import details_of
from tests.e2e.conftest import Mesh
from tests.e2e.sse import OpenStream, post_generate


def inference_pid(mesh: Mesh) -> int:
    pattern = f"services.inference .*--listen 127.0.0.1:{mesh.port('inference_base')}"
    pids = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
    assert len(pids) == 1, pids
    return int(pids[0])


def wait_for_new_inference(mesh: Mesh, old_pid: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if inference_pid(mesh) != old_pid:
                break
        except AssertionError:
            pass
        time.sleep(0.1)
    mesh.wait_healthy(timeout=60)


def test_killing_inference_mid_stream_fails_the_grpc_client_fast_and_is_recovered(mesh: Mesh) -> None:
    pid = inference_pid(mesh)
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stream = gateway_pb2_grpc.GatewayServiceStub(channel).Generate(
            pb.GenerateRequest(prompt="Tell me a very long story.", max_tokens=900), timeout=60
        )
        assert next(stream).text is not None
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as failed:
            for _ in stream:
                pass
        waited = time.monotonic() - killed_at
    details = details_of(failed.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE, details
    assert details.reason == "INFERENCE_UNAVAILABLE"
    assert waited < 1.0, f"the client waited {waited:.3f}s"
    wait_for_new_inference(mesh, pid)
    reply = post_generate("127.0.0.1", mesh.port("edge_http"), {"prompt": "Hello", "max_tokens": 4})
    assert reply.status == 200 and reply.events[-1]["usage"]["output_tokens"] == 4


def test_killing_inference_ends_a_rest_stream_fast_and_new_requests_get_503_until_it_is_back(mesh: Mesh) -> None:
    pid = inference_pid(mesh)
    stream = OpenStream("127.0.0.1", mesh.port("edge_http"), {"prompt": "Tell me a long story.", "max_tokens": 900})
    stream.next_event()
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    events = []
    with pytest.raises(EOFError):
        while True:
            events.append(stream.next_event())
    assert time.monotonic() - killed_at < 1.0
    assert all(event.get("finish_reason") == "FINISH_REASON_UNSPECIFIED" for event in events)
    stream.close()
    refused = post_generate("127.0.0.1", mesh.port("edge_http"), {"prompt": "Hello", "max_tokens": 4})
    if refused.status != 200:  # the restart may already have won the race
        assert refused.status == 503, refused.body
    wait_for_new_inference(mesh, pid)
    reply = post_generate("127.0.0.1", mesh.port("edge_http"), {"prompt": "Hello", "max_tokens": 4})
    assert reply.status == 200 and reply.events[-1]["usage"]["output_tokens"] == 4
