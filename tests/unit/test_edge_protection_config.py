"""The edge's protection in its generated bootstrap: overload manager, limits, timeouts and the body limit.

What each does on the real Envoy is shown by tests/integration/test_edge_protection.py and
tests/e2e/test_edge_limits.py; these check what the configuration says, and that bad limits are refused.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.edge import build_bootstrap
from gateway.edge.config import EdgeLimits
from gateway.edge.local_replies import LOCAL_ERRORS
from tests.unit.test_edge_bootstrap import connection_manager, edge_config, listener

BUFFER = "envoy.filters.http.buffer"


def bootstrap_with(tmp_path: Path, **limits: Any) -> dict[str, Any]:
    return build_bootstrap(edge_config(tmp_path, limits=EdgeLimits(**limits), openai_endpoints=[("127.0.0.1", 9)]))


def test_the_overload_manager_watches_the_heap_and_the_connections(tmp_path: Path) -> None:
    manager = bootstrap_with(tmp_path, max_heap_bytes=512 * 1024 * 1024, max_connections=1500)["overload_manager"]
    monitors = {monitor["name"]: monitor["typed_config"] for monitor in manager["resource_monitors"]}
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == str(512 * 1024 * 1024)
    connections = monitors["envoy.resource_monitors.global_downstream_max_connections"]
    assert connections["max_active_downstream_connections"] == "1500"
    actions = {action["name"]: action["triggers"] for action in manager["actions"]}
    (refuse,) = actions["envoy.overload_actions.stop_accepting_requests"]
    (shrink,) = actions["envoy.overload_actions.shrink_heap"]
    assert refuse["name"] == shrink["name"] == "envoy.resource_monitors.fixed_heap"
    assert shrink["threshold"]["value"] < refuse["threshold"]["value"] == 0.95


def test_the_admin_interface_is_outside_the_connection_cap(tmp_path: Path) -> None:
    assert bootstrap_with(tmp_path)["admin"]["ignore_global_conn_limit"] is True


@pytest.mark.parametrize("name", ["edge_http", "edge_https"])
def test_both_listeners_bound_headers_time_streams_and_buffers(tmp_path: Path, name: str) -> None:
    bootstrap = bootstrap_with(
        tmp_path,
        idle_timeout=datetime.timedelta(seconds=7),
        request_headers_timeout=datetime.timedelta(seconds=3),
        max_concurrent_streams=12,
        per_connection_buffer_bytes=16384,
    )
    manager = connection_manager(bootstrap, name)
    assert manager["max_request_headers_kb"] == 256
    assert manager["request_headers_timeout"] == "3s"
    assert manager["common_http_protocol_options"]["idle_timeout"] == "7s"
    assert manager["common_http_protocol_options"]["max_headers_count"] == 1000
    assert manager["http2_protocol_options"]["max_concurrent_streams"] == 12
    assert listener(bootstrap, name)["per_connection_buffer_limit_bytes"] == 16384


def test_an_unfinished_tls_handshake_is_cut_off(tmp_path: Path) -> None:
    bootstrap = bootstrap_with(tmp_path, tls_handshake_timeout=datetime.timedelta(seconds=4))
    (chain,) = listener(bootstrap, "edge_https")["filter_chains"]
    assert chain["transport_socket_connect_timeout"] == "4s"


def route_buffering(bootstrap: dict[str, Any]) -> dict[str, bool]:
    """Each forwarded route's match (prefix or path), and whether its body goes through the body limit."""
    (host,) = connection_manager(bootstrap, "edge_http")["route_config"]["virtual_hosts"]
    buffered = {}
    for route in host["routes"]:
        if "route" not in route:
            continue
        match = route["match"]
        key = match.get("prefix") or match.get("path") or match["safe_regex"]["regex"]
        per_filter = route.get("typed_per_filter_config", {})
        buffered[key] = not per_filter.get(BUFFER, {}).get("disabled", False)
    return buffered


def test_bodies_are_limited_except_grpc_streams_and_file_uploads(tmp_path: Path) -> None:
    bootstrap = bootstrap_with(tmp_path, max_request_body_bytes=1024)
    chain = connection_manager(bootstrap, "edge_http")["http_filters"]
    filters = {item["name"]: item["typed_config"] for item in chain}
    assert filters[BUFFER]["max_request_bytes"] == 1024
    buffered = route_buffering(bootstrap)
    assert buffered["/v1/chat/completions"] and buffered["/v1/completions"]
    assert not buffered["/v1/files"]
    assert not buffered["/meshserve.gateway.v1.GatewayService/"]
    assert not buffered["/grpc.health.v1.Health/"]


def test_envoys_own_refusals_each_have_a_reason_and_the_overload_its_own() -> None:
    by_status = {(error.status, error.details): error for error in LOCAL_ERRORS}
    assert by_status[(413, None)].reason == "REQUEST_TOO_LARGE"
    assert by_status[(431, None)].reason == "HEADERS_TOO_LARGE"
    assert by_status[(408, None)].reason == "REQUEST_HEADERS_TIMEOUT"
    assert by_status[(503, "overload")].reason == "EDGE_OVERLOADED"
    # The first mapper that matches wins: the overload's must come before the plain 503's.
    statuses = [(error.status, error.details) for error in LOCAL_ERRORS]
    assert statuses.index((503, "overload")) < statuses.index((503, None))


@pytest.mark.parametrize(
    "limits",
    [
        {"max_request_header_bytes": 1000},
        {"max_request_header_bytes": 9000 * 1024},
        {"max_connections": 0},
        {"shrink_heap_at": 0.97, "refuse_requests_at": 0.95},
        {"refuse_requests_at": 1.5},
        {"idle_timeout": datetime.timedelta(0)},
        {"max_concurrent_streams": 0},
    ],
)
def test_bad_limits_are_refused(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EdgeLimits(**limits)


def test_only_requests_no_replica_received_are_retried_and_on_another_replica(tmp_path: Path) -> None:
    (host,) = connection_manager(bootstrap_with(tmp_path), "edge_http")["route_config"]["virtual_hosts"]
    forwarded = [route["route"] for route in host["routes"] if "route" in route]
    assert forwarded
    for action in forwarded:
        policy = action["retry_policy"]
        assert set(policy["retry_on"].split(",")) == {"connect-failure", "refused-stream", "reset-before-request"}
        (predicate,) = policy["retry_host_predicate"]
        assert predicate["name"] == "envoy.retry_host_predicates.previous_hosts"
