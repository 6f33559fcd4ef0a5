"""The scheduler's domain: endpoints, asks for a slot, and the grants that answer them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.shared.domain import Priority, SlotOutcome
from services.shared.identity import CallerLimits


@dataclass(frozen=True)
class EndpointSpec:
    """One inference service serving one model."""

    endpoint_id: str
    model: str
    address: str
    total_slots: int
    # The device within the node ("gpu0", "host"); empty is the node's first device.
    device_id: str = ""
    # How long the model stays loaded with nothing running; None keeps it loaded.
    keep_alive_seconds: float | None = None
    # The node it runs on, as that node's GPU monitor names it; empty for an endpoint given by flag,
    # whose device is matched by device_id alone.
    node_name: str = ""


@dataclass(frozen=True)
class Footprint:
    """What an endpoint's model costs: its weights while resident, and the KV cache of each running request."""

    weights_bytes: int
    kv_bytes_per_slot: int

    def full_bytes(self, slots: int) -> int:
        return self.weights_bytes + slots * self.kv_bytes_per_slot


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
    # Models that will do, in order, when the device is under pressure and this one does not fit.
    fallback_models: tuple[str, ...] = ()
    # What the caller's credential allows (caller_limits.py); None: no limits, as for the mesh's own work.
    limits: CallerLimits | None = None

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *self.fallback_models)

    def within_ceiling(self) -> Ask:
        """The ask at the highest priority its caller may ask for, if it asked for more."""
        if self.limits is None or self.priority <= self.limits.max_priority:
            return self
        return replace(self, priority=self.limits.max_priority)


@dataclass(frozen=True)
class Grant:
    ticket_id: str
    slot_id: str
    endpoint: EndpointSpec
    queue_wait_seconds: float
    # The device's pressure level when the slot was granted (a PressureLevel value).
    pressure_level: int = 1


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
class Recall:
    """A LOW slot taken back for more urgent work on its device: its holder must stop and release it."""

    ticket_id: str
    slot_id: str


@dataclass(frozen=True)
class Lost:
    """A held slot whose endpoint left the mesh: its holder must fail the work at once and release it."""

    ticket_id: str
    slot_id: str
    reason: str


@dataclass(frozen=True)
class Unload:
    """The shell must unload this endpoint's model, then report back with unloaded() or unload_failed()."""

    endpoint_id: str
    reason: str


@dataclass(frozen=True)
class Release:
    outcome: SlotOutcome = SlotOutcome.UNKNOWN
    first_token_seconds: float | None = None
    # Prompt and completion tokens the request used, for the caller's tokens-per-minute limit.
    tokens: int = 0


@dataclass(frozen=True)
class EndpointSnapshot:
    spec: EndpointSpec
    used_slots: int
    available: bool
    resident: bool = True
    circuit_open: bool = False
    latency_ema_seconds: float | None = None
    failure_rate: float = 0.0
    device_id: str = ""


@dataclass(frozen=True)
class DeviceSnapshot:
    device_id: str
    level: int
    thermal: int
    capacity_bytes: int | None
    reserved_bytes: int
    peak_reserved_bytes: int
    measured_used_bytes: int
    # No reading from its monitor lately: nothing new starts on it until readings resume.
    silent: bool = False


@dataclass(frozen=True)
class SchedulerSnapshot:
    endpoints: tuple[EndpointSnapshot, ...]
    queue_depth_by_priority: dict[Priority, int]
    devices: tuple[DeviceSnapshot, ...] = ()
