"""Slots are a hard limit: past them a request is refused at once, and every way a request ends frees its slot."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest
from meshserve.inference.v1 import inference_pb2 as pb

from services.shared.status_details import details_of
from tests.support import COUNTING_PROMPT, most_tokens_until_idle

LONG = pb.GenerateRequest(prompt=COUNTING_PROMPT, max_tokens=900, temperature=0.0)


def model_info(inference) -> pb.ModelInfo:
    return inference.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).model


def free_slots(inference) -> int:
    return model_info(inference).free_slots


def wait_for_free_slots(inference, expected: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if free_slots(inference) == expected:
            return
        time.sleep(0.01)
    pytest.fail(f"free slots did not return to {expected} within {within}s (now {free_slots(inference)})")


def start_streams(inference, count: int) -> list:
    streams = [inference.Generate(LONG, timeout=120) for _ in range(count)]
    for stream in streams:
        assert next(stream).token_ids  # generating, so holding a slot
    return streams


def test_over_capacity_is_refused_at_once_with_a_retry_delay(inference) -> None:
    streams = start_streams(inference, 2)
    try:
        assert free_slots(inference) == 0
        with pytest.raises(grpc.RpcError) as refused:
            # Waiting for a slot would mean waiting out a 900-token generation: served, or past this deadline.
            list(inference.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=4), timeout=30))
        details = details_of(refused.value)
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "SLOTS_EXHAUSTED"
        assert details.retry_after_seconds is not None and details.retry_after_seconds > 0
        # Refused while both generations still held their slots, not once one of them had ended.
        assert free_slots(inference) == 0
    finally:
        for stream in streams:
            stream.cancel()
    wait_for_free_slots(inference, 2)


def test_cancelling_frees_the_slot_and_the_next_request_is_served(inference) -> None:
    first, second = start_streams(inference, 2)
    try:
        first.cancel()
        wait_for_free_slots(inference, 1)
        reply = list(inference.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=8, seed=1), timeout=60))
        assert reply[-1].usage.output_tokens == 8
        # The freed slot served it while the other slot was still generating.
        assert free_slots(inference) == 1
    finally:
        second.cancel()
    wait_for_free_slots(inference, 2)


def test_a_cancelled_generation_stops_inside_the_engine(inference) -> None:
    """Not only the stream to the client ends: the engine stops the run and frees its slot for the next."""
    (stream,) = start_streams(inference, 1)
    stream.cancel()
    assert most_tokens_until_idle(lambda: model_info(inference)) < LONG.max_tokens // 2
    first_token = next(inference.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=4), timeout=60))
    assert first_token.token_ids
    wait_for_free_slots(inference, 2)


def test_deadline_is_honoured_and_frees_the_slot(inference) -> None:
    with pytest.raises(grpc.RpcError) as expired:
        list(inference.Generate(LONG, timeout=0.5))
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The engine stopped at the deadline too, long before the 900 tokens it was asked for.
    assert most_tokens_until_idle(lambda: model_info(inference)) < LONG.max_tokens // 2


def test_a_client_that_dies_mid_stream_frees_its_slot(inference, inference_address: str) -> None:
    client_code = f"""
import grpc, sys
from meshserve.inference.v1 import inference_pb2 as pb, inference_pb2_grpc
stub = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel("{inference_address}"))
for message in stub.Generate(pb.GenerateRequest(prompt="{COUNTING_PROMPT}", max_tokens=900, temperature=0.0)):
    print("token", flush=True)
"""
    client = subprocess.Popen([sys.executable, "-c", client_code], stdout=subprocess.PIPE)
    try:
        assert client.stdout.readline() == b"token\n"  # streaming, so holding a slot
        assert free_slots(inference) == 1
    finally:
        client.kill()
        client.wait()
    # The service noticed the dead client and stopped its run, long before its 900 tokens.
    assert most_tokens_until_idle(lambda: model_info(inference)) < LONG.max_tokens // 2
