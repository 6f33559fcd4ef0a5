"""Proto messages to scheduler domain objects and back."""

from __future__ import annotations

from meshserve.scheduler.v1 import scheduler_pb2 as pb

from orchestrator.scheduler.core.model import Ask, EndpointSpec, Grant, Lost, Queued, Recall, Release
from services.shared.domain import Priority, SlotOutcome
from services.shared.errors import invalid_argument
from services.shared.identity import CallerLimits
from services.shared.proto_maps import SLOT_OUTCOME_FROM_PROTO, SLOT_PRIORITY_FROM_PROTO


def to_ask(message: pb.AcquireSlotRequest, ticket_id: str, deadline: float | None = None) -> Ask:
    if not message.HasField("ask"):
        raise invalid_argument("ASK_FIRST", "the first message on an AcquireSlot stream must be an ask")
    ask = message.ask
    if not ask.model:
        raise invalid_argument("MISSING_MODEL", "the ask must name a model")
    if ask.priority not in SLOT_PRIORITY_FROM_PROTO:
        raise invalid_argument("INVALID_PRIORITY", f"unknown priority {ask.priority}")
    fallbacks = tuple(dict.fromkeys(model for model in ask.fallback_models if model and model != ask.model))
    priority = SLOT_PRIORITY_FROM_PROTO[ask.priority]
    limits = to_limits(ask.limits) if ask.HasField("limits") else None
    # Capped here already, so that the queue's span and log say the priority it is served at.
    return Ask(
        ticket_id, ask.model, priority, ask.caller_id, ask.request_id, deadline, fallbacks, limits
    ).within_ceiling()


def to_limits(message: pb.CallerLimits) -> CallerLimits:
    if message.max_priority not in SLOT_PRIORITY_FROM_PROTO:
        raise invalid_argument("INVALID_PRIORITY", f"unknown priority ceiling {message.max_priority}")
    counts = (message.requests_per_minute, message.tokens_per_minute, message.max_concurrent)
    if any(count < 0 for count in counts):
        raise invalid_argument("INVALID_LIMITS", "limits are counts: 0 (none) or more")
    rpm, tpm, concurrent = (count or None for count in counts)
    # No ceiling named is no ceiling, not the NORMAL an unspecified priority otherwise means.
    unspecified = message.max_priority == pb.PRIORITY_UNSPECIFIED
    ceiling = Priority.CRITICAL if unspecified else SLOT_PRIORITY_FROM_PROTO[message.max_priority]
    return CallerLimits(rpm, tpm, concurrent, ceiling)


def to_release(message: pb.SlotRelease) -> Release:
    first_token = message.time_to_first_token.ToNanoseconds() / 1e9 if message.HasField("time_to_first_token") else None
    tokens = max(0, message.input_tokens) + max(0, message.output_tokens)
    return Release(SLOT_OUTCOME_FROM_PROTO.get(message.outcome, SlotOutcome.UNKNOWN), first_token, tokens)


def to_endpoint(spec: EndpointSpec) -> pb.Endpoint:
    return pb.Endpoint(
        endpoint_id=spec.endpoint_id,
        model=spec.model,
        address=spec.address,
        device_id=spec.device_id,
        node_name=spec.node_name,
    )


def to_registered_spec(
    message: pb.RegisterEndpointRequest, keep_alive_seconds: float | None
) -> tuple[EndpointSpec, int]:
    """The endpoint a registration describes, named after its model and address, and what it runs now."""
    if not message.HasField("registration"):
        raise invalid_argument("REGISTRATION_FIRST", "the first message on a RegisterEndpoint stream must register")
    registration = message.registration
    endpoint = registration.endpoint
    host, _, port = endpoint.address.rpartition(":")
    if not endpoint.model:
        raise invalid_argument("MISSING_MODEL", "the registration must name the model served")
    if not host or not port.isdigit():
        raise invalid_argument("INVALID_ADDRESS", f"address {endpoint.address!r} must look like HOST:PORT")
    if registration.total_slots < 1 or registration.running_requests < 0:
        raise invalid_argument("INVALID_SLOTS", "an endpoint has at least one slot and runs zero or more requests")
    spec = EndpointSpec(
        f"{endpoint.model}@{endpoint.address}",
        endpoint.model,
        endpoint.address,
        registration.total_slots,
        endpoint.device_id,
        keep_alive_seconds,
        endpoint.node_name,
    )
    return spec, min(registration.running_requests, registration.total_slots)


def to_slot_news(news: Recall | Lost) -> pb.AcquireSlotResponse:
    if isinstance(news, Recall):
        return pb.AcquireSlotResponse(recalled=pb.SlotRecall(slot_id=news.slot_id))
    return pb.AcquireSlotResponse(lost=pb.SlotLost(slot_id=news.slot_id, reason=news.reason))


def to_update(update: Queued | Grant) -> pb.AcquireSlotResponse:
    if isinstance(update, Queued):
        return pb.AcquireSlotResponse(queued=pb.QueuePosition(position=update.position, queue_depth=update.depth))
    grant = pb.SlotGrant(
        slot_id=update.slot_id,
        endpoint=to_endpoint(update.endpoint),
        model=update.endpoint.model,
        pressure_level=update.pressure_level,
    )
    grant.queue_wait.FromNanoseconds(int(update.queue_wait_seconds * 1e9))
    return pb.AcquireSlotResponse(granted=grant)
