"""The scheduler's domain: endpoints, asks for a slot, and the grants that answer them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Priority(IntEnum):
    """Higher values are served first."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True)
class EndpointSpec:
    """One inference service serving one model."""

    endpoint_id: str
    model: str
    address: str
    total_slots: int
    device_id: str = ""


@dataclass(frozen=True)
class Ask:
    """A request for a slot on an endpoint of a model."""

    ticket_id: str
    model: str
    priority: Priority = Priority.NORMAL
    caller_id: str = ""
    request_id: str = ""
    # When the caller stops waiting, on the scheduler's clock; None waits as long as it takes.
    deadline: float | None = None


@dataclass(frozen=True)
class Grant:
    ticket_id: str
    slot_id: str
    endpoint: EndpointSpec
    queue_wait_seconds: float


@dataclass(frozen=True)
class Queued:
    """The ask waits; position counts the asks that will be granted before it."""

    ticket_id: str
    position: int
    depth: int


@dataclass(frozen=True)
class Expired:
    """A waiting ask whose deadline passed before a slot came free: it never reaches an engine."""

    ticket_id: str


@dataclass(frozen=True)
class Shed:
    """A waiting ask pushed out of a full queue by a more urgent one."""

    ticket_id: str
    retry_after_seconds: float


@dataclass(frozen=True)
class EndpointSnapshot:
    spec: EndpointSpec
    used_slots: int
    available: bool


@dataclass(frozen=True)
class SchedulerSnapshot:
    endpoints: tuple[EndpointSnapshot, ...]
    queue_depth_by_priority: dict[Priority, int]
