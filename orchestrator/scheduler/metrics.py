"""The scheduler's Prometheus metrics: admissions as they happen, and its state read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from meshserve.scheduler.v1 import scheduler_pb2 as pb
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.scheduler.state_report import StateReporter

ADMISSIONS = Counter(
    "meshserve_scheduler_admissions_total",
    "Asks for a slot, by outcome (admitted at once, queued, rejected) and the reason for a rejection",
    ["outcome", "reason"],
)
QUEUE_WAIT = Histogram(
    "meshserve_scheduler_queue_wait_seconds",
    "Time from an ask to its grant, by priority",
    ["priority"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


class SchedulerStateCollector(Collector):
    """Queue depth, slots, endpoint health and pressure, read from the live state on every scrape."""

    def __init__(self, reporter: StateReporter) -> None:
        self._reporter = reporter

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._reporter.report()
        depth = GaugeMetricFamily("meshserve_scheduler_queue_depth", "Asks waiting, by priority", labels=["priority"])
        for queue in state.queue:
            depth.add_metric([pb.Priority.Name(queue.priority).removeprefix("PRIORITY_")], queue.depth)
        yield depth
        yield from _endpoint_families(state)
        level = GaugeMetricFamily(
            "meshserve_scheduler_pressure_level",
            "Memory-pressure level per device: 0 unknown, 1 LOW ... 5 EMERGENCY",
            labels=["device"],
        )
        for device in state.devices:
            level.add_metric([device.device_id], device.pressure_level)
        yield level


def _endpoint_families(state: pb.GetSchedulerStateResponse) -> Iterator[GaugeMetricFamily]:
    labels = ["model", "endpoint"]
    used = GaugeMetricFamily("meshserve_scheduler_slots_in_use", "Slots granted now, per endpoint", labels=labels)
    total = GaugeMetricFamily("meshserve_scheduler_slots_total", "Slots an endpoint offers", labels=labels)
    up = GaugeMetricFamily("meshserve_scheduler_endpoint_up", "1 while an endpoint reports SERVING", labels=labels)
    for endpoint in state.endpoints:
        key = [endpoint.endpoint.model, endpoint.endpoint.endpoint_id]
        used.add_metric(key, endpoint.used_slots)
        total.add_metric(key, endpoint.total_slots)
        up.add_metric(key, 1 if endpoint.health == pb.ENDPOINT_HEALTH_SERVING else 0)
    yield from (used, total, up)
