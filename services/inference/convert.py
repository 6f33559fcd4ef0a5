"""Proto messages to domain objects and back, for the inference servicer."""

from __future__ import annotations

from meshserve.inference.v1 import inference_pb2 as pb

from services.inference.core.model import ModelState
from services.inference.core.service import ModelStatus
from services.shared.domain import (
    ChatMessage,
    ChatRole,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
)
from services.shared.errors import invalid_argument
from services.shared.proto_maps import fill_completion_fields, sampling_of

_ROLES = {
    pb.CHAT_ROLE_SYSTEM: ChatRole.SYSTEM,
    pb.CHAT_ROLE_USER: ChatRole.USER,
    pb.CHAT_ROLE_ASSISTANT: ChatRole.ASSISTANT,
}
_FINISH_REASONS = {FinishReason.STOP: pb.FINISH_REASON_STOP, FinishReason.LENGTH: pb.FINISH_REASON_LENGTH}
_STATES = {
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.READY: pb.MODEL_STATE_READY,
    ModelState.STOPPING: pb.MODEL_STATE_STOPPING,
    ModelState.UNLOADED: pb.MODEL_STATE_UNLOADED,
}


def to_generation_request(message: pb.GenerateRequest) -> GenerationRequest:
    return GenerationRequest(
        sampling=sampling_of(message),
        prompt=message.prompt,
        messages=tuple(_to_chat_message(index, m) for index, m in enumerate(message.messages)),
        request_id=message.request_id,
    )


def _to_chat_message(index: int, message: pb.ChatMessage) -> ChatMessage:
    role = _ROLES.get(message.role)
    if role is None:
        raise invalid_argument(
            "INVALID_CHAT_ROLE", f"messages[{index}] needs a role: SYSTEM, USER or ASSISTANT", index=index
        )
    return ChatMessage(role, message.content)


def to_generate_response(chunk: GenerationChunk) -> pb.GenerateResponse:
    response = pb.GenerateResponse(token_ids=chunk.token_ids)
    return fill_completion_fields(response, chunk, _FINISH_REASONS)


def to_model_info(name: str, status: ModelStatus) -> pb.ModelInfo:
    info = pb.ModelInfo(
        name=name, state=_STATES[status.state], total_slots=status.total_slots, free_slots=status.free_slots
    )
    metadata = status.metadata
    if metadata is not None:
        info.engine = metadata.engine
        info.context_length = metadata.context_length
        info.weights_bytes = metadata.weights_bytes
        info.kv_cache_bytes_per_slot = metadata.kv_cache_bytes_per_slot
        info.memory_footprint_bytes = metadata.memory_footprint_bytes
        info.layer_count = metadata.layer_count
        info.kv_head_count = metadata.kv_head_count
        info.head_dim = metadata.head_dim
        info.kv_cache_element_bytes = metadata.kv_cache_element_bytes
    activity = status.activity
    if activity is not None:
        info.activity.CopyFrom(
            pb.EngineActivity(
                running_requests=activity.running_requests,
                waiting_requests=activity.waiting_requests,
                kv_cache_capacity_bytes=activity.kv_cache_capacity_bytes,
                kv_cache_used_bytes=activity.kv_cache_used_bytes,
            )
        )
    return info
