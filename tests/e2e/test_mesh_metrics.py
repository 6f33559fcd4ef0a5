"""Every service serves Prometheus /metrics, and traffic moves each counter and histogram by the right amount."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Mesh
from tests.e2e.openai_support import raw_post

MODEL = "gemma-3-270m"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metrics(mesh: Mesh, port_name: str) -> dict[tuple[str, frozenset], float]:
    return scrape(f"http://127.0.0.1:{mesh.port(port_name)}/metrics")


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


SERVICES = ("gateway_metrics", "scheduler_metrics", "inference_metrics_base", "gpu_monitor_metrics")


def test_traffic_moves_the_metrics_of_every_service_by_the_right_amounts(mesh: Mesh) -> None:
    before = {service: metrics(mesh, service) for service in SERVICES}
    for _ in range(3):
        reply = mesh.post_generate({"prompt": "Hello", "max_tokens": 5})
        assert reply.events[-1]["usage"] == {"input_tokens": 2, "output_tokens": 5}
    refused = mesh.post_generate({"prompt": ""})
    assert refused.status == 400
    after = {service: metrics(mesh, service) for service in SERVICES}

    gateway_before, gateway_after = before["gateway_metrics"], after["gateway_metrics"]
    method = "/meshserve.gateway.v1.GatewayService/Generate"
    assert delta(gateway_before, gateway_after, "meshserve_rpc_requests_total", method=method, code="OK") == 3
    assert (
        delta(gateway_before, gateway_after, "meshserve_rpc_requests_total", method=method, code="INVALID_ARGUMENT")
        == 1
    )
    assert delta(gateway_before, gateway_after, "meshserve_tokens_total", model=MODEL, kind="output") == 15
    assert delta(gateway_before, gateway_after, "meshserve_tokens_total", model=MODEL, kind="input") == 6
    assert delta(gateway_before, gateway_after, "meshserve_time_to_first_token_seconds_count", model=MODEL) == 3
    assert delta(gateway_before, gateway_after, "meshserve_time_per_output_token_seconds_count", model=MODEL) == 3
    assert (
        delta(gateway_before, gateway_after, "meshserve_request_duration_seconds_count", model=MODEL, outcome="ok") == 3
    )
    assert delta(gateway_before, gateway_after, "meshserve_request_duration_seconds_count", model=MODEL,
                 outcome="empty_prompt") == 1  # fmt: skip

    scheduler_before, scheduler_after = before["scheduler_metrics"], after["scheduler_metrics"]
    assert delta(scheduler_before, scheduler_after, "meshserve_scheduler_admissions_total", outcome="admitted",
                 reason="") == 3  # fmt: skip
    assert (
        delta(scheduler_before, scheduler_after, "meshserve_scheduler_queue_wait_seconds_count", priority="NORMAL") == 3
    )
    method = "/meshserve.scheduler.v1.SchedulerService/AcquireSlot"
    assert delta(scheduler_before, scheduler_after, "meshserve_rpc_requests_total", method=method, code="OK") == 3

    inference_before, inference_after = before["inference_metrics_base"], after["inference_metrics_base"]
    method = "/meshserve.inference.v1.InferenceService/Generate"
    assert delta(inference_before, inference_after, "meshserve_rpc_requests_total", method=method, code="OK") == 3
    assert delta(inference_before, inference_after, "meshserve_tokens_total", model=MODEL, kind="output") == 15
    assert delta(inference_before, inference_after, "meshserve_time_to_first_token_seconds_count", model=MODEL) == 3
    assert value(inference_after, "meshserve_slots_total", model=MODEL) == 2

    monitor = after["gpu_monitor_metrics"]
    totals = [v for (name, _), v in monitor.items() if name == "meshserve_device_memory_total_bytes"]
    used = [v for (name, _), v in monitor.items() if name == "meshserve_device_memory_used_bytes"]
    assert len(totals) == 1 and 0 < used[0] <= totals[0]


def test_gauges_follow_slots_and_the_queue(mesh: Mesh) -> None:
    streams = [mesh.open_stream({"prompt": "A long story.", "max_tokens": 900})
               for _ in range(2)]  # fmt: skip
    for stream in streams:
        stream.next_event()
    scheduler, inference = metrics(mesh, "scheduler_metrics"), metrics(mesh, "inference_metrics_base")
    for stream in streams:
        stream.close()
    endpoint = f"{MODEL}@127.0.0.1:{mesh.port('inference_base')}"
    assert value(scheduler, "meshserve_scheduler_slots_in_use", model=MODEL, endpoint=endpoint) == 2
    assert value(scheduler, "meshserve_scheduler_endpoint_up", model=MODEL, endpoint=endpoint) == 1
    assert value(scheduler, "meshserve_scheduler_queue_depth", priority="HIGH") == 0
    assert value(inference, "meshserve_slots_in_use", model=MODEL) == 2


def test_envoy_stats_are_reachable_in_prometheus_format(mesh: Mesh) -> None:
    samples = scrape(f"http://127.0.0.1:{mesh.port('edge_admin')}/stats/prometheus")
    gateway_cluster = ("envoy_cluster_name", "gateway")
    requests = [
        value
        for (name, labels), value in samples.items()
        if name == "envoy_cluster_upstream_rq_total" and gateway_cluster in labels
    ]
    assert requests and requests[0] > 0


def test_the_openai_front_counts_its_answers_by_endpoint_and_status(mesh: Mesh) -> None:
    before = metrics(mesh, "openai_metrics")
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 2}
    assert raw_post(mesh, "/v1/completions", body).status_code == 200
    assert raw_post(mesh, "/v1/completions", {**body, "temperature": 9}).status_code == 400
    assert raw_post(mesh, "/v1/completions", {**body, "model": "nope"}).status_code == 404
    after = metrics(mesh, "openai_metrics")
    for status in ("200", "400", "404"):
        counted = delta(before, after, "meshserve_openai_requests_total", endpoint="completions", status=status)
        assert counted == 1, status
    # The same requests reached the gateway, which counts them as every other request.
    gateway = metrics(mesh, "gateway_metrics")
    assert value(gateway, "meshserve_tokens_total", model=MODEL, kind="output") >= 2
