"""Who is in the mesh: the endpoints the scheduler knows, the devices its monitors read, and which device
each endpoint runs on.

Endpoints live on a device's ledger once a monitor has named that device, and on the unmeasured device
(limited by the memory budget alone) until then; a device seen later adopts its endpoints, with their
weights and running requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from orchestrator.scheduler.core.breaker import BreakerPolicy, EndpointHealthRecord
from orchestrator.scheduler.core.devices import Device, PressurePolicy, device_for
from orchestrator.scheduler.core.endpoints import TrackedEndpoint
from orchestrator.scheduler.core.model import EndpointSpec


class Roster:
    def __init__(
        self, pressure: PressurePolicy, breaker: BreakerPolicy | None, clock: Callable[[], float], models: Iterable[str]
    ) -> None:
        self._pressure = pressure
        self._breaker = breaker
        self._clock = clock
        self.unmeasured = Device("", pressure)
        self.devices: dict[str, Device] = {}
        self.endpoints: dict[str, TrackedEndpoint] = {}
        # Models asked for while none of their endpoints is up are unavailable (503), not unknown (404).
        self.known_models = set(models)

    def track(self, spec: EndpointSpec, available: bool) -> TrackedEndpoint:
        if spec.endpoint_id in self.endpoints:
            raise ValueError(f"endpoint {spec.endpoint_id} is already known")
        device_id = device_for(spec.node_name, spec.device_id, list(self.devices))
        device = self.devices[device_id] if device_id is not None else self.unmeasured
        endpoint = TrackedEndpoint(
            spec, device, EndpointHealthRecord(self._breaker), available, last_used=self._clock()
        )
        self.endpoints[spec.endpoint_id] = endpoint
        self.known_models.add(spec.model)
        return endpoint

    def untrack(self, endpoint_id: str) -> TrackedEndpoint | None:
        return self.endpoints.pop(endpoint_id, None)

    def device(self, device_id: str) -> Device:
        """The device of that id, seen for the first time if it is new, adopting the endpoints that run on it."""
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = Device(device_id, self._pressure)
            known = list(self.devices)
            for endpoint in self.endpoints.values():
                spec = endpoint.spec
                if (
                    endpoint.device is self.unmeasured
                    and device_for(spec.node_name, spec.device_id, known) == device_id
                ):
                    endpoint.move_to(device)
        return device

    def all_devices(self) -> list[Device]:
        """Every device seen, and the unmeasured one while no device is or an endpoint still lives there."""
        unmeasured = not self.devices or any(e.device is self.unmeasured for e in self.endpoints.values())
        return [*self.devices.values(), *([self.unmeasured] if unmeasured else [])]

    def of_model(self, model: str) -> list[TrackedEndpoint]:
        return [endpoint for endpoint in self.endpoints.values() if endpoint.spec.model == model]

    def neighbours(self, endpoint: TrackedEndpoint) -> list[TrackedEndpoint]:
        """The endpoints sharing its device, itself included."""
        return [other for other in self.endpoints.values() if other.device is endpoint.device]
