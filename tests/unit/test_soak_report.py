"""The soak's verdict on descriptors: Envoy's pooled connections aside, one descriptor more is a leak."""

from bench.soak import Footprint, SoakReport, connections_in


def report(envoy_after_warmup: Footprint, envoy_at_end: Footprint) -> SoakReport:
    soak = SoakReport(seconds=60, warmup_seconds=20, workers=2)
    soak.after_warmup = {"envoy": envoy_after_warmup, "gateway": Footprint(100, 30)}
    soak.at_end = {"envoy": envoy_at_end, "gateway": Footprint(100, 30)}
    return soak


def descriptor_violations(soak: SoakReport) -> list[str]:
    return [v for v in soak.violations() if "descriptors" in v]


def test_two_more_pooled_connections_are_not_a_leak() -> None:
    soak = report(Footprint(100, 58, connections=9), Footprint(100, 60, connections=11))
    assert descriptor_violations(soak) == []


def test_a_descriptor_more_besides_the_connections_is_a_leak() -> None:
    soak = report(Footprint(100, 58, connections=9), Footprint(100, 60, connections=10))
    assert descriptor_violations(soak) == ["envoy open descriptors grew: 58 -> 60 (connections 9 -> 10)"]


def test_a_process_that_reports_no_connections_is_held_to_its_descriptors() -> None:
    soak = report(Footprint(100, 58), Footprint(100, 58))
    soak.at_end["gateway"] = Footprint(100, 31)
    assert descriptor_violations(soak) == ["gateway open descriptors grew: 30 -> 31 (connections 0 -> 0)"]


def test_envoys_connections_are_its_listeners_and_clusters_without_the_per_thread_copies() -> None:
    stats = "\n".join([
        "cluster.gateway.upstream_cx_active: 3",
        "cluster.authorization.upstream_cx_active: 2",
        "http.edge_http.downstream_cx_active: 7",
        "listener.127.0.0.1_31510.downstream_cx_active: 7",
        "listener.127.0.0.1_31510.downstream_pre_cx_active: 1",
        "listener.127.0.0.1_31510.worker_0.downstream_cx_active: 4",
        "listener.127.0.0.1_31510.worker_1.downstream_cx_active: 3",
        "listener.admin.downstream_cx_active: 1",
        "listener.admin.main_thread.downstream_cx_active: 1",
    ])  # fmt: skip
    assert connections_in(stats) == 3 + 2 + 7 + 1
