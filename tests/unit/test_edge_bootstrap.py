"""The Envoy edge bootstrap: what the generated configuration says, checked without running Envoy."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from gateway.edge import EdgeConfig, build_bootstrap, build_descriptor_set, write_bootstrap
from gateway.edge.auth import EdgeAuth, TrustedIssuer
from services.shared.tls import TlsFiles

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
FILTER_ORDER = [
    "envoy.filters.http.health_check",
    "envoy.filters.http.local_ratelimit",
    "envoy.filters.http.buffer",
    "envoy.filters.http.grpc_json_transcoder",
    "envoy.filters.http.router",
]


def tls_files(directory: Path, name: str) -> TlsFiles:
    return TlsFiles(cert=directory / f"{name}.pem", key=directory / f"{name}-key.pem", ca=directory / "ca.pem")


def edge_config(tmp_path: Path, **overrides: Any) -> EdgeConfig:
    settings: dict[str, Any] = {
        "gateway_endpoints": [("127.0.0.1", 50051)],
        "server_tls": tls_files(tmp_path / "certs", "edge-public"),
        "upstream_tls": tls_files(tmp_path / "certs", "edge"),
        "descriptor_set": tmp_path / "gateway.pb",
        "sds_dir": tmp_path / "sds",
    }
    return EdgeConfig(**{**settings, **overrides})


@pytest.fixture()
def bootstrap(tmp_path: Path) -> dict[str, Any]:
    return build_bootstrap(edge_config(tmp_path))


def listener(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [item for item in bootstrap["static_resources"]["listeners"] if item["name"] == name]
    return found


def connection_manager(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    (chain,) = listener(bootstrap, name)["filter_chains"]
    (network_filter,) = chain["filters"]
    assert network_filter["name"] == "envoy.filters.network.http_connection_manager"
    return network_filter["typed_config"]


def http_filter(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    filters = connection_manager(bootstrap, "edge_http")["http_filters"]
    (found,) = [item["typed_config"] for item in filters if item["name"] == name]
    return found


def cluster(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [item for item in bootstrap["static_resources"]["clusters"] if item["name"] == name]
    return found


def gateway_cluster(bootstrap: dict[str, Any]) -> dict[str, Any]:
    return cluster(bootstrap, "gateway")


def socket(address: dict[str, Any]) -> tuple[str, int]:
    return address["socket_address"]["address"], address["socket_address"]["port_value"]


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def test_listeners_and_admin_are_on_the_contract_addresses(bootstrap: dict[str, Any]) -> None:
    assert socket(listener(bootstrap, "edge_http")["address"]) == ("127.0.0.1", 8080)
    assert socket(listener(bootstrap, "edge_https")["address"]) == ("0.0.0.0", 8443)
    assert socket(bootstrap["admin"]["address"]) == ("127.0.0.1", 9901)


def test_every_port_can_be_chosen(tmp_path: Path) -> None:
    config = edge_config(
        tmp_path,
        plain_http_address=("127.0.0.1", 18080),
        tls_address=("127.0.0.1", 18443),
        admin_address=("127.0.0.1", 19901),
    )
    bootstrap = build_bootstrap(config)
    assert socket(listener(bootstrap, "edge_http")["address"]) == ("127.0.0.1", 18080)
    assert socket(listener(bootstrap, "edge_https")["address"]) == ("127.0.0.1", 18443)
    assert socket(bootstrap["admin"]["address"]) == ("127.0.0.1", 19901)


@pytest.mark.parametrize("field", ["plain_http_address", "admin_address"])
@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "localhost"])
def test_plain_http_and_admin_stay_on_loopback(tmp_path: Path, field: str, host: str) -> None:
    with pytest.raises(ValueError, match=field):
        edge_config(tmp_path, **{field: (host, 8080)})


def test_both_listeners_share_the_filters_in_order_and_the_routes(bootstrap: dict[str, Any]) -> None:
    plain, tls = connection_manager(bootstrap, "edge_http"), connection_manager(bootstrap, "edge_https")
    assert [item["name"] for item in plain["http_filters"]] == FILTER_ORDER
    assert plain["http_filters"] == tls["http_filters"]
    assert plain["route_config"] == tls["route_config"]


def test_every_typed_config_names_its_type(bootstrap: dict[str, Any]) -> None:
    typed = [value for key, value in walk(bootstrap) if key in ("typed_config", "typed_extension_protocol_options")]
    assert len(typed) > 8
    for value in typed:
        configs = value.values() if "@type" not in value else [value]
        for config in configs:
            assert config["@type"].startswith("type.googleapis.com/envoy."), config


def test_keys_are_the_proto_field_names(bootstrap: dict[str, Any]) -> None:
    outlier = gateway_cluster(bootstrap)["outlier_detection"]
    # A field whose name has a digit: camel-casing libraries tend to mangle it.
    assert outlier["enforcing_consecutive_5xx"] == 0
    keys = {key for key, _ in walk(bootstrap)}
    assert "statPrefix" not in keys and "stat_prefix" in keys


def test_the_transcoder_speaks_the_rest_contract(bootstrap: dict[str, Any], tmp_path: Path) -> None:
    transcoder = http_filter(bootstrap, "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["proto_descriptor"] == str((tmp_path / "gateway.pb").resolve())
    assert transcoder["services"] == [
        "meshserve.gateway.v1.GatewayService",
        "meshserve.jobs.v1.JobsService",
        "meshserve.identity.v1.IdentityService",
    ]
    assert transcoder["print_options"] == {
        "preserve_proto_field_names": True,
        "always_print_primitive_fields": True,
        "stream_sse_style_delimited": True,
    }
    assert transcoder["convert_grpc_status"] is True
    # Unbound methods (plain gRPC, health, reflection) pass through: false is proto3's default.
    assert transcoder["request_validation_options"].get("reject_unknown_method", False) is False


def test_healthz_is_answered_by_envoy_from_the_gateway_cluster_health(bootstrap: dict[str, Any]) -> None:
    health = http_filter(bootstrap, "envoy.filters.http.health_check")
    assert health["pass_through_mode"] is False
    assert health["headers"] == [{"name": ":path", "string_match": {"exact": "/healthz"}}]
    assert health["cluster_min_healthy_percentages"] == {"gateway": {"value": 100.0}}


def test_the_rate_limit_is_enforced_with_the_configured_bucket(tmp_path: Path) -> None:
    bootstrap = build_bootstrap(edge_config(tmp_path, rate_limit_per_second=7, rate_limit_burst=11))
    limit = http_filter(bootstrap, "envoy.filters.http.local_ratelimit")
    assert limit["token_bucket"] == {"max_tokens": 11, "tokens_per_fill": 7, "fill_interval": "1s"}
    assert limit["filter_enabled"]["default_value"]["numerator"] == 100
    assert limit["filter_enforced"]["default_value"]["numerator"] == 100
    assert "status" not in limit  # Envoy's default answer is 429.


def routes_of(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    (host,) = connection_manager(bootstrap, "edge_http")["route_config"]["virtual_hosts"]
    return host["routes"]


def test_grpc_paths_go_to_the_gateway_without_a_request_timeout(bootstrap: dict[str, Any]) -> None:
    forwarded = [route for route in routes_of(bootstrap) if "route" in route]
    assert [route["match"]["prefix"] for route in forwarded] == [
        "/meshserve.gateway.v1.GatewayService/",
        "/meshserve.jobs.v1.JobsService/",
        "/grpc.health.v1.Health/",
        "/grpc.reflection.",
    ]
    for route in forwarded:
        assert route["route"]["cluster"] == "gateway"
        assert route["route"]["timeout"] == "0s"
        assert route["route"]["idle_timeout"] == "300s"
        assert route["route"]["max_stream_duration"]["max_stream_duration"] == "3600s"
    assert connection_manager(bootstrap, "edge_http")["stream_idle_timeout"] == "300s"


def test_native_rest_paths_left_untranscoded_are_a_wrong_method_and_the_rest_unknown(bootstrap: dict[str, Any]) -> None:
    answered = {route["match"].get("path"): route for route in routes_of(bootstrap) if "direct_response" in route}
    for path, method in {"/v1/generate": "POST", "/v1/mesh/models": "GET", "/v1/gpu/status": "GET"}.items():
        assert answered[path]["direct_response"]["status"] == 405
        assert answered[path]["response_headers_to_add"] == [{"header": {"key": "allow", "value": method}}]
    last = routes_of(bootstrap)[-1]
    assert last["match"] == {"prefix": "/"} and last["direct_response"]["status"] == 404
    assert "openai" not in [cluster["name"] for cluster in bootstrap["static_resources"]["clusters"]]


def test_the_openai_front_gets_its_routes_its_cluster_and_a_say_in_healthz(tmp_path: Path) -> None:
    bootstrap = build_bootstrap(edge_config(tmp_path, openai_endpoints=[("127.0.0.1", 50031)]))
    to_front = [route for route in routes_of(bootstrap) if route.get("route", {}).get("cluster") == "openai"]
    assert [route["match"].get("path", route["match"].get("safe_regex", {}).get("regex")) for route in to_front] == [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "^/v1/models/[^/]+$",
        "/v1/files",
        "^/v1/files/[^/]+$",
        "^/v1/files/[^/]+/content$",
        "/v1/batches",
        "^/v1/batches/[^/]+$",
        "^/v1/batches/[^/]+/cancel$",
    ]
    assert [route["match"]["headers"][0]["string_match"]["safe_regex"]["regex"] for route in to_front] == [
        "^(POST)$",
        "^(POST)$",
        "^(GET)$",
        "^(GET)$",
        "^(POST)$",
        "^(GET)$",
        "^(GET)$",
        "^(GET|POST)$",
        "^(GET)$",
        "^(POST)$",
    ]
    (cluster,) = [item for item in bootstrap["static_resources"]["clusters"] if item["name"] == "openai"]
    common = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["alpn_protocols"] == ["http/1.1"]
    san = common["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
    assert san[0]["matcher"] == {"exact": "spiffe://meshserve.local/openai"}
    assert cluster["health_checks"][0]["http_health_check"]["path"] == "/healthz"
    health = http_filter(bootstrap, "envoy.filters.http.health_check")
    assert set(health["cluster_min_healthy_percentages"]) == {"gateway", "openai"}


def test_the_tls_listener_takes_its_certificate_from_sds_and_asks_for_no_client_certificate(
    bootstrap: dict[str, Any], tmp_path: Path
) -> None:
    (chain,) = listener(bootstrap, "edge_https")["filter_chains"]
    context = chain["transport_socket"]["typed_config"]
    assert context["@type"].endswith("tls.v3.DownstreamTlsContext")
    assert context["require_client_certificate"] is False
    (secret,) = context["common_tls_context"]["tls_certificate_sds_secret_configs"]
    source = secret["sds_config"]["path_config_source"]
    assert Path(source["path"]).parent == (tmp_path / "sds").resolve()
    assert source["watched_directory"] == {"path": str((tmp_path / "sds").resolve())}
    assert "transport_socket" not in listener(bootstrap, "edge_http")["filter_chains"][0]


def test_the_gateway_is_reached_over_mtls_http2_and_must_be_the_gateway(bootstrap: dict[str, Any]) -> None:
    cluster = gateway_cluster(bootstrap)
    assert cluster["type"] == "STATIC"
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    context = cluster["transport_socket"]["typed_config"]
    assert context["@type"].endswith("tls.v3.UpstreamTlsContext")
    assert context["sni"] == "localhost"
    common = context["common_tls_context"]
    assert [secret["name"] for secret in common["tls_certificate_sds_secret_configs"]] == ["edge_client_certificate"]
    validation = common["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://meshserve.local/gateway"}}
    ]
    assert validation["validation_context_sds_secret_config"]["name"] == "mesh_ca"


def test_the_gateway_is_health_checked_over_grpc_and_ejected_when_failing(bootstrap: dict[str, Any]) -> None:
    cluster = gateway_cluster(bootstrap)
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {}  # The empty service name: the server's overall health.
    assert (check["interval"], check["timeout"], check["no_traffic_interval"]) == ("1s", "1s", "1s")
    assert (check["unhealthy_threshold"], check["healthy_threshold"]) == (1, 1)
    outlier = cluster["outlier_detection"]
    # Ejected only when it cannot be reached, never for the gRPC errors it answers with.
    assert outlier["split_external_local_origin_errors"] is True
    assert outlier["consecutive_local_origin_failure"] == 3
    assert outlier["enforcing_consecutive_local_origin_failure"] == 100
    assert outlier["enforcing_consecutive_gateway_failure"] == 0
    assert outlier["base_ejection_time"] == "5s"


def test_gateway_host_names_are_resolved_by_dns(tmp_path: Path) -> None:
    cluster = gateway_cluster(build_bootstrap(edge_config(tmp_path, gateway_endpoints=[("gateway.mesh", 50051)])))
    assert cluster["type"] == "STRICT_DNS"


def test_write_bootstrap_writes_the_bootstrap_and_one_secret_file_per_secret(tmp_path: Path) -> None:
    config = edge_config(tmp_path)
    path = write_bootstrap(config, tmp_path / "envoy.json")
    assert json.loads(path.read_text()) == build_bootstrap(config)
    documents = {file.stem: json.loads(file.read_text()) for file in (tmp_path / "sds").glob("*.json")}
    assert set(documents) == {"edge_server_certificate", "edge_client_certificate", "mesh_ca"}
    (server,) = documents["edge_server_certificate"]["resources"]
    assert server["@type"] == SECRET_TYPE
    assert server["name"] == "edge_server_certificate"
    assert server["tls_certificate"]["certificate_chain"] == {"filename": str(config.server_tls.cert.resolve())}
    assert server["tls_certificate"]["private_key"] == {"filename": str(config.server_tls.key.resolve())}
    (ca,) = documents["mesh_ca"]["resources"]
    assert ca["validation_context"]["trusted_ca"] == {"filename": str(config.upstream_tls.ca.resolve())}


def test_the_descriptor_set_holds_the_api_and_the_error_types(tmp_path: Path) -> None:
    path = build_descriptor_set(tmp_path / "out" / "gateway.pb")
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    names = {f"{file.package}.{item.name}" for file in descriptors.file for item in [*file.service, *file.message_type]}
    assert "meshserve.gateway.v1.GatewayService" in names
    assert {"google.rpc.Status", "google.rpc.ErrorInfo", "google.rpc.RetryInfo"} <= names
    # The REST bindings travel with the methods, as options the transcoder reads.
    (gateway,) = [file for file in descriptors.file if file.name == "meshserve/gateway/v1/gateway.proto"]
    assert gateway.service[0].method[0].options.ByteSize() > 0


OTEL_CONFIG_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"


@pytest.fixture()
def traced(tmp_path: Path) -> dict[str, Any]:
    return build_bootstrap(edge_config(tmp_path, otlp_endpoint=("127.0.0.1", 4317)))


def test_without_a_collector_nothing_about_tracing_is_in_the_bootstrap(bootstrap: dict[str, Any]) -> None:
    for name in ("edge_http", "edge_https"):
        assert "tracing" not in connection_manager(bootstrap, name)
    assert [item["name"] for item in bootstrap["static_resources"]["clusters"]] == ["gateway"]
    assert "layered_runtime" not in bootstrap
    assert "opentelemetry" not in json.dumps(bootstrap)


def test_with_a_collector_both_listeners_trace_with_opentelemetry(traced: dict[str, Any]) -> None:
    tracing = connection_manager(traced, "edge_http")["tracing"]
    assert connection_manager(traced, "edge_https")["tracing"] == tracing
    assert tracing["provider"] == {
        "name": "envoy.tracers.opentelemetry",
        "typed_config": {
            "@type": OTEL_CONFIG_TYPE,
            "grpc_service": {"envoy_grpc": {"cluster_name": "otel_collector"}, "timeout": "5s"},
            "service_name": "envoy",
        },
    }
    # The edge samples every request, and its call to the gateway is a span of its own.
    assert tracing["random_sampling"] == {"value": 100.0}
    assert tracing["spawn_upstream_span"] is True


def test_the_collector_is_reached_over_plaintext_http2(traced: dict[str, Any], bootstrap: dict[str, Any]) -> None:
    collector = cluster(traced, "otel_collector")
    assert collector["type"] == "STATIC"
    (locality,) = collector["load_assignment"]["endpoints"]
    (host,) = locality["lb_endpoints"]
    assert socket(host["endpoint"]["address"]) == ("127.0.0.1", 4317)
    assert collector["load_assignment"]["cluster_name"] == "otel_collector"
    options = collector["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert "transport_socket" not in collector
    assert "health_checks" not in collector
    # The gateway cluster is unchanged by tracing.
    assert gateway_cluster(traced) == gateway_cluster(bootstrap)


def test_a_collector_host_name_is_resolved_by_dns(tmp_path: Path) -> None:
    bootstrap = build_bootstrap(edge_config(tmp_path, otlp_endpoint=("jaeger", 4317)))
    assert cluster(bootstrap, "otel_collector")["type"] == "STRICT_DNS"
    assert gateway_cluster(bootstrap)["type"] == "STATIC"


def test_spans_are_flushed_as_configured(tmp_path: Path, traced: dict[str, Any]) -> None:
    # Envoy's defaults (5 spans, 5s) would keep a quiet edge's spans out of Jaeger for seconds.
    (default,) = traced["layered_runtime"]["layers"]
    assert default["static_layer"] == {
        "tracing.opentelemetry.flush_interval_ms": 1000,
        "tracing.opentelemetry.min_flush_spans": 5,
    }
    config = edge_config(
        tmp_path,
        otlp_endpoint=("127.0.0.1", 4317),
        trace_flush_interval=datetime.timedelta(milliseconds=250),
        trace_min_flush_spans=1,
    )
    (layer,) = build_bootstrap(config)["layered_runtime"]["layers"]
    assert layer["static_layer"] == {
        "tracing.opentelemetry.flush_interval_ms": 250,
        "tracing.opentelemetry.min_flush_spans": 1,
    }


@pytest.mark.parametrize(
    "overrides",
    [
        {"otlp_endpoint": ("127.0.0.1", 0)},
        {"otlp_endpoint": ("jaeger", 70000)},
        {"trace_flush_interval": datetime.timedelta(0)},
        {"trace_min_flush_spans": 0},
    ],
)
def test_bad_tracing_settings_are_refused(tmp_path: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        edge_config(tmp_path, **overrides)


def authenticated(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    issuers = (
        TrustedIssuer("dev", "https://meshserve.local/dev", ("meshserve",), jwks_file=tmp_path / "jwks.json"),
        TrustedIssuer("corp", "https://login.corp", ("api",), jwks_url="https://login.corp:8443/keys"),
    )
    config = edge_config(tmp_path, auth_endpoints=[("127.0.0.1", 50045)], auth=EdgeAuth(issuers), **overrides)
    return build_bootstrap(config)


def test_every_request_passes_jwt_authn_then_ext_authz_before_the_transcoder(tmp_path: Path) -> None:
    bootstrap = authenticated(tmp_path)
    names = [item["name"] for item in connection_manager(bootstrap, "edge_https")["http_filters"]]
    assert names == [*FILTER_ORDER[:2], "envoy.filters.http.jwt_authn", "envoy.filters.http.ext_authz",
                     *FILTER_ORDER[2:]]  # fmt: skip
    authz = http_filter(bootstrap, "envoy.filters.http.ext_authz")
    assert authz["grpc_service"]["envoy_grpc"]["cluster_name"] == "auth"
    # Proto3 JSON leaves out a false: failure_mode_allow is off, so an unanswered check lets nothing in.
    assert "failure_mode_allow" not in authz and authz["status_on_error"]["code"] == "ServiceUnavailable"
    assert authz["metadata_context_namespaces"] == ["envoy.filters.http.jwt_authn"]


def test_jwt_authn_verifies_every_issuer_and_leaves_the_decision_to_ext_authz(tmp_path: Path) -> None:
    jwt = http_filter(authenticated(tmp_path), "envoy.filters.http.jwt_authn")
    dev, corp = jwt["providers"]["dev"], jwt["providers"]["corp"]
    assert dev["issuer"] == "https://meshserve.local/dev" and dev["audiences"] == ["meshserve"]
    assert dev["local_jwks"]["filename"].endswith("jwks.json")
    assert corp["remote_jwks"]["http_uri"]["cluster"] == "jwks_corp"
    for provider in (dev, corp):
        assert provider["require_expiration"] is True and provider["forward"] is True
        assert (provider["payload_in_metadata"], provider["failed_status_in_metadata"]) == ("payload", "failure")
    (rule,) = jwt["rules"]
    alternatives = rule["requires"]["requires_any"]["requirements"]
    assert {"provider_name": "dev"} in alternatives and {"allow_missing_or_failed": {}} in alternatives


def test_the_authorization_service_is_reached_over_mtls_and_a_jwks_url_over_checked_tls(tmp_path: Path) -> None:
    bootstrap = authenticated(tmp_path)
    auth = cluster(bootstrap, "auth")
    assert "spiffe://meshserve.local/auth" in json.dumps(auth["transport_socket"])
    assert "grpc_health_check" in auth["health_checks"][0]
    jwks = cluster(bootstrap, "jwks_corp")
    context = jwks["transport_socket"]["typed_config"]
    assert context["sni"] == "login.corp"
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"] == "/etc/ssl/certs/ca-certificates.crt"
    assert '"auth"' in json.dumps(http_filter(bootstrap, "envoy.filters.http.health_check"))


def test_trusted_issuers_need_the_authorization_service(tmp_path: Path) -> None:
    issuer = TrustedIssuer("dev", "https://i", ("a",), jwks_file=tmp_path / "jwks.json")
    with pytest.raises(ValueError, match="authorization service"):
        edge_config(tmp_path, auth=EdgeAuth((issuer,)))
    with pytest.raises(ValueError, match="exactly one"):
        TrustedIssuer("both", "https://i", ("a",), jwks_file=tmp_path / "j", jwks_url="https://i/keys")
