"""Conversions at the gateway's edges: its public protos, the inference protos, and the shared domain."""

from __future__ import annotations

from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.inference.v1 import inference_pb2

from gateway.core.service import GatewayChunk, GatewayRequest
from services.shared.domain import (
    ChatMessage,
    ChatRole,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    Priority,
    Usage,
)
from services.shared.errors import invalid_argument
from services.shared.identity import CallerLimits
from services.shared.proto_maps import fill_completion_fields, fill_sampling_fields, logprobs_of, sampling_of

_ROLES = {
    pb.CHAT_ROLE_SYSTEM: ChatRole.SYSTEM,
    pb.CHAT_ROLE_USER: ChatRole.USER,
    pb.CHAT_ROLE_ASSISTANT: ChatRole.ASSISTANT,
}
_PRIORITIES = {
    pb.PRIORITY_UNSPECIFIED: Priority.NORMAL,
    pb.PRIORITY_LOW: Priority.LOW,
    pb.PRIORITY_NORMAL: Priority.NORMAL,
    pb.PRIORITY_HIGH: Priority.HIGH,
    pb.PRIORITY_CRITICAL: Priority.CRITICAL,
}
_INFERENCE_ROLES = {
    ChatRole.SYSTEM: inference_pb2.CHAT_ROLE_SYSTEM,
    ChatRole.USER: inference_pb2.CHAT_ROLE_USER,
    ChatRole.ASSISTANT: inference_pb2.CHAT_ROLE_ASSISTANT,
}
_FINISH_FROM_INFERENCE = {
    inference_pb2.FINISH_REASON_STOP: FinishReason.STOP,
    inference_pb2.FINISH_REASON_LENGTH: FinishReason.LENGTH,
}
_FINISH_TO_PUBLIC = {FinishReason.STOP: pb.FINISH_REASON_STOP, FinishReason.LENGTH: pb.FINISH_REASON_LENGTH}


def to_gateway_request(
    message: pb.GenerateRequest, caller_id: str, request_id: str, limits: CallerLimits | None = None
) -> GatewayRequest:
    if message.priority not in _PRIORITIES:
        raise invalid_argument("INVALID_PRIORITY", f"unknown priority {message.priority}")
    messages = []
    for index, chat in enumerate(message.messages):
        if chat.role not in _ROLES:
            raise invalid_argument("INVALID_CHAT_ROLE", f"messages[{index}] needs a role: SYSTEM, USER or ASSISTANT")
        messages.append(ChatMessage(_ROLES[chat.role], chat.content))
    generation = GenerationRequest(sampling_of(message), message.prompt, tuple(messages), request_id)
    return GatewayRequest(
        generation, message.model, _PRIORITIES[message.priority], caller_id, tuple(message.fallback_models), limits
    )


def to_public_response(item: GatewayChunk) -> pb.GenerateResponse:
    response = pb.GenerateResponse(model=item.model, token_count=len(item.chunk.token_ids))
    return fill_completion_fields(response, item.chunk, _FINISH_TO_PUBLIC)


def to_inference_request(model: str, request: GenerationRequest) -> inference_pb2.GenerateRequest:
    sampling = request.sampling
    message = inference_pb2.GenerateRequest(
        model=model,
        prompt=request.prompt,
        messages=[
            inference_pb2.ChatMessage(role=_INFERENCE_ROLES[m.role], content=m.content) for m in request.messages
        ],
        request_id=request.request_id,
    )
    return fill_sampling_fields(message, sampling)


def from_inference_response(message: inference_pb2.GenerateResponse) -> GenerationChunk:
    finish = _FINISH_FROM_INFERENCE.get(message.finish_reason)
    usage = Usage(message.usage.input_tokens, message.usage.output_tokens) if message.HasField("usage") else None
    return GenerationChunk(message.text, tuple(message.token_ids), finish, usage, logprobs_of(message))
