"""Bad input is INVALID_ARGUMENT with a reason, never INTERNAL, and never harms the service."""

from __future__ import annotations

import grpc
import pytest
from meshserve.inference.v1 import inference_pb2 as pb

from services.shared.status_details import details_of

USER = pb.CHAT_ROLE_USER
ASSISTANT = pb.CHAT_ROLE_ASSISTANT

BAD_REQUESTS = {
    "empty prompt": (pb.GenerateRequest(prompt=""), "EMPTY_PROMPT"),
    "prompt and messages": (
        pb.GenerateRequest(prompt="Hi", messages=[pb.ChatMessage(role=USER, content="Hi")]),
        "PROMPT_AND_MESSAGES",
    ),
    "negative max_tokens": (pb.GenerateRequest(prompt="Hi", max_tokens=-1), "INVALID_MAX_TOKENS"),
    "zero max_tokens": (pb.GenerateRequest(prompt="Hi", max_tokens=0), "INVALID_MAX_TOKENS"),
    "huge max_tokens": (pb.GenerateRequest(prompt="Hi", max_tokens=2_000_000_000), "INVALID_MAX_TOKENS"),
    "negative temperature": (pb.GenerateRequest(prompt="Hi", temperature=-0.1), "INVALID_TEMPERATURE"),
    "temperature above 2": (pb.GenerateRequest(prompt="Hi", temperature=2.5), "INVALID_TEMPERATURE"),
    "temperature NaN": (pb.GenerateRequest(prompt="Hi", temperature=float("nan")), "INVALID_TEMPERATURE"),
    "top_p zero": (pb.GenerateRequest(prompt="Hi", top_p=0.0), "INVALID_TOP_P"),
    "top_p above 1": (pb.GenerateRequest(prompt="Hi", top_p=1.5), "INVALID_TOP_P"),
    "prompt longer than the context": (pb.GenerateRequest(prompt="lighthouse " * 1200), "PROMPT_TOO_LONG"),
    "prompt far longer than the context": (pb.GenerateRequest(prompt="x" * 500_000), "PROMPT_TOO_LONG"),
    "unknown model": (pb.GenerateRequest(model="gpt-17", prompt="Hi"), "UNKNOWN_MODEL"),
    "message without a role": (
        pb.GenerateRequest(messages=[pb.ChatMessage(content="Hi")]),
        "INVALID_CHAT_ROLE",
    ),
    "messages all empty": (pb.GenerateRequest(messages=[pb.ChatMessage(role=USER)]), "EMPTY_PROMPT"),
    "roles that do not alternate": (
        pb.GenerateRequest(
            messages=[pb.ChatMessage(role=ASSISTANT, content="Hi"), pb.ChatMessage(role=ASSISTANT, content="Hi")]
        ),
        "INVALID_CONVERSATION",
    ),
    "too many stop sequences": (pb.GenerateRequest(prompt="Hi", stop=[str(n) for n in range(9)]), "INVALID_STOP"),
    "empty stop sequence": (pb.GenerateRequest(prompt="Hi", stop=[""]), "INVALID_STOP"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_request_is_invalid_argument_with_a_reason(inference, name: str) -> None:
    request, reason = BAD_REQUESTS[name]
    with pytest.raises(grpc.RpcError) as refused:
        list(inference.Generate(request, timeout=30))
    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.reason == reason
    assert details.message


def test_invalid_utf8_is_invalid_argument(inference_address: str) -> None:
    # protobuf strings must be UTF-8; a stub cannot even build this message, so send the bytes by hand:
    # field 2 (prompt), length-delimited, holding bytes that are not UTF-8.
    raw_request = b"\x12\x04\xff\xfe\xfd\xfc"
    with grpc.insecure_channel(inference_address) as channel:
        generate = channel.unary_stream(
            "/meshserve.inference.v1.InferenceService/Generate",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.GenerateResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(generate(raw_request, timeout=10))
    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "MALFORMED_REQUEST"


def test_the_service_still_serves_after_bad_input(inference) -> None:
    for request, _ in BAD_REQUESTS.values():
        with pytest.raises(grpc.RpcError):
            list(inference.Generate(request, timeout=30))
    reply = list(inference.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=4)))
    assert reply[-1].usage.output_tokens == 4
    assert inference.GetModelInfo(pb.GetModelInfoRequest()).model.free_slots == 2
