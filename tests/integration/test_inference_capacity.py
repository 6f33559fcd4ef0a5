"""Slots are a hard limit: past them a request is refused at once, and every way a request ends frees its slot."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest
from meshserve.inference.v1 import inference_pb2 as pb

from services.shared.status_details import details_of

LONG = pb.GenerateRequest(prompt="Tell me everything you know about the history of Europe.", max_tokens=900, seed=5)


def free_slots(inference) -> int:
    return inference.GetModelInfo(pb.GetModelInfoRequest()).model.free_slots


def wait_for_free_slots(inference, expected: int, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if free_slots(inference) == expected:
            return time.monotonic() - started
        time.sleep(0.01)
    pytest.fail(f"free slots did not return to {expected} within {within}s (now {free_slots(inference)})")


def start_streams(inference, count: int) -> list:
    streams = [inference.Generate(LONG) for _ in range(count)]
    for stream in streams:
        assert next(stream).token_ids  # generating, so holding a slot
    return streams


def test_over_capacity_is_refused_at_once_with_a_retry_delay(inference) -> None:
    streams = start_streams(inference, 2)
    try:
        assert free_slots(inference) == 0
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            list(inference.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=4)))
        elapsed = time.monotonic() - started
        details = details_of(refused.value)
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "SLOTS_EXHAUSTED"
        assert details.retry_after_seconds is not None and details.retry_after_seconds > 0
        assert elapsed < 0.5, f"refusal took {elapsed:.3f}s"
    finally:
        for stream in streams:
            stream.cancel()
    wait_for_free_slots(inference, 2, within=1.0)


def test_cancelling_frees_the_slot_and_the_next_request_is_served(inference) -> None:
    first, second = start_streams(inference, 2)
    try:
        first.cancel()
        freed_after = wait_for_free_slots(inference, 1, within=1.0)
        # The freed slot serves a new request while the other slot is still generating.
        reply = list(inference.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=8, seed=1)))
        assert reply[-1].usage.output_tokens == 8
        assert freed_after < 1.0
    finally:
        second.cancel()
    wait_for_free_slots(inference, 2, within=1.0)


def test_a_cancelled_generation_stops_within_a_token(inference) -> None:
    """After a cancel, the same slot starts the next request as soon as the one token in flight is done."""
    (stream,) = start_streams(inference, 1)
    other = start_streams(inference, 1)[0]
    stream.cancel()
    wait_for_free_slots(inference, 1, within=1.0)
    started = time.monotonic()
    first_token = next(inference.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=4)))
    waited = time.monotonic() - started
    other.cancel()
    assert first_token.token_ids
    # A 900-token generation left running would hold the slot for many seconds.
    assert waited < 1.0, f"the freed slot took {waited:.3f}s to start the next request"
    wait_for_free_slots(inference, 2, within=1.0)


def test_deadline_is_honoured_and_frees_the_slot(inference) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as expired:
        list(inference.Generate(LONG, timeout=0.5))
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    wait_for_free_slots(inference, 2, within=1.0)


def test_a_client_that_dies_mid_stream_frees_its_slot(inference, inference_address: str) -> None:
    client_code = f"""
import grpc, sys
from meshserve.inference.v1 import inference_pb2 as pb, inference_pb2_grpc
stub = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel("{inference_address}"))
for message in stub.Generate(pb.GenerateRequest(prompt="Tell me a long story.", max_tokens=900)):
    print("token", flush=True)
"""
    client = subprocess.Popen([sys.executable, "-c", client_code], stdout=subprocess.PIPE)
    try:
        assert client.stdout.readline() == b"token\n"  # streaming, so holding a slot
        assert free_slots(inference) == 1
    finally:
        client.kill()
        client.wait()
    wait_for_free_slots(inference, 2, within=1.0)
