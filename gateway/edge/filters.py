"""The HTTP filter chain both edge listeners share, in the order Envoy runs it.

1. health_check answers /healthz itself, before rate limiting, so probes are never throttled.
2. local_ratelimit sheds load before any work is done for a request.
3. jwt_authn verifies bearer tokens, and ext_authz asks the authorization service who the caller is
   (auth.py): nothing unauthenticated goes further.
4. buffer holds a REST or OpenAI body, up to its limit, and answers 413 past it (protection.py); it
   comes after authentication, so an anonymous caller never gets a body buffered.
5. grpc_json_transcoder turns REST calls into gRPC and gRPC answers back into JSON or SSE; gRPC
   calls (the public API, health, reflection) pass through it untouched.
6. router sends gRPC to the gateway cluster and the OpenAI API to the openai cluster (routes.py).
"""

from __future__ import annotations

import datetime

from envoy_data_plane.envoy.config.core.v3 import RuntimeFractionalPercent
from envoy_data_plane.envoy.config.route.v3 import HeaderMatcher
from envoy_data_plane.envoy.extensions.filters.http.grpc_json_transcoder.v3 import (
    GrpcJsonTranscoder,
    GrpcJsonTranscoderPrintOptions,
    GrpcJsonTranscoderRequestValidationOptions,
)
from envoy_data_plane.envoy.extensions.filters.http.health_check.v3 import HealthCheck
from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3 import LocalRateLimit
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpFilter
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.envoy.type.v3 import FractionalPercent, FractionalPercentDenominatorType, Percent, TokenBucket

from gateway.edge.auth import AUTH_CLUSTER, JWT_FILTER, ext_authz, jwt_authentication
from gateway.edge.config import GATEWAY_CLUSTER, HEALTH_PATH, OPENAI_CLUSTER, EdgeConfig
from gateway.edge.descriptors import GATEWAY_SERVICE, IDENTITY_SERVICE, JOBS_SERVICE
from gateway.edge.protection import body_limit_filter
from gateway.edge.typed import pack


def http_filters(config: EdgeConfig) -> list[HttpFilter]:
    return [
        HttpFilter(name="envoy.filters.http.health_check", typed_config=pack(_health_check(config))),
        HttpFilter(name="envoy.filters.http.local_ratelimit", typed_config=pack(_rate_limit(config))),
        *_identity_filters(config),
        body_limit_filter(config.limits),
        HttpFilter(name="envoy.filters.http.grpc_json_transcoder", typed_config=pack(_transcoder(config))),
        HttpFilter(name="envoy.filters.http.router", typed_config=pack(Router())),
    ]


def _identity_filters(config: EdgeConfig) -> list[HttpFilter]:
    if not config.auth_endpoints:
        return []
    tokens = (
        [HttpFilter(name=JWT_FILTER, typed_config=pack(jwt_authentication(config.auth)))] if config.auth.issuers else []
    )
    return [*tokens, HttpFilter(name="envoy.filters.http.ext_authz", typed_config=pack(ext_authz(config.auth)))]


def _health_check(config: EdgeConfig) -> HealthCheck:
    # Not pass-through: the edge answers /healthz, 200 only while every gateway host (and OpenAI front)
    # passes its active health check (so the whole mesh behind it is SERVING), else 503.
    clusters = [GATEWAY_CLUSTER, *([OPENAI_CLUSTER] if config.openai_endpoints else [])]
    clusters += [AUTH_CLUSTER] if config.auth_endpoints else []
    return HealthCheck(
        pass_through_mode=False,
        headers=[HeaderMatcher(name=":path", string_match=StringMatcher(exact=HEALTH_PATH))],
        cluster_min_healthy_percentages={cluster: Percent(value=100.0) for cluster in clusters},
    )


def _rate_limit(config: EdgeConfig) -> LocalRateLimit:
    everyone = RuntimeFractionalPercent(
        default_value=FractionalPercent(numerator=100, denominator=FractionalPercentDenominatorType.HUNDRED),
        runtime_key="edge_rate_limit_enabled",
    )
    return LocalRateLimit(
        stat_prefix="edge_rate_limit",
        token_bucket=TokenBucket(
            max_tokens=config.rate_limit_burst,
            tokens_per_fill=config.rate_limit_per_second,
            fill_interval=datetime.timedelta(seconds=1),
        ),
        # Both are needed: "enabled" only counts, "enforced" answers 429.
        filter_enabled=everyone,
        filter_enforced=everyone,
        # gRPC callers see RESOURCE_EXHAUSTED (the mesh's "come back later"), not UNAVAILABLE.
        rate_limited_as_resource_exhausted=True,
    )


def _transcoder(config: EdgeConfig) -> GrpcJsonTranscoder:
    return GrpcJsonTranscoder(
        proto_descriptor=str(config.descriptor_set.resolve()),
        services=[GATEWAY_SERVICE, JOBS_SERVICE, IDENTITY_SERVICE],
        print_options=GrpcJsonTranscoderPrintOptions(
            # The REST contract: snake_case names, zero values present, streams as `data: {json}` events.
            preserve_proto_field_names=True,
            always_print_primitive_fields=True,
            stream_sse_style_delimited=True,
        ),
        # Errors become JSON google.rpc.Status bodies with the HTTP code of their gRPC status.
        convert_grpc_status=True,
        request_validation_options=GrpcJsonTranscoderRequestValidationOptions(
            # Anything not bound to REST (plain gRPC, health, reflection) goes on to the gateway.
            reject_unknown_method=False,
        ),
    )
