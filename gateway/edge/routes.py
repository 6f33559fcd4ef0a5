"""The edge's route table: what goes to the gateway, what to the OpenAI front, and what Envoy answers itself.

The transcoder runs before routing and rewrites a REST call it knows (`POST /v1/generate`) to its gRPC
path, so the gateway's routes match gRPC paths only. A request still on a native REST path when it is
routed had a method the path does not take, and is answered 405; a path no route knows is answered 404.
Neither reaches a gateway. Both answers are JSON in the shape of their surface: the OpenAI envelope
under the OpenAI API's paths, a google.rpc.Status everywhere else.
"""

from __future__ import annotations

import datetime

from envoy_data_plane.envoy.config.core.v3 import HeaderValue, HeaderValueOption, SubstitutionFormatString
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    HeaderMatcher,
    RetryPolicy,
    RetryPolicyRetryHostPredicate,
    Route,
    RouteAction,
    RouteActionMaxStreamDuration,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import PreviousHostsPredicate
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.google.protobuf import Struct

from gateway.edge.auth import AUTH_CLUSTER
from gateway.edge.config import GATEWAY_CLUSTER, OPENAI_CLUSTER, EdgeConfig
from gateway.edge.protection import unbuffered
from gateway.edge.typed import pack
from gateway.public_api import GATEWAY_SERVICE_NAME, IDENTITY_SERVICE_NAME, JOBS_SERVICE_NAME, rest_bindings
from services.shared.errors import ERROR_DOMAIN

_DISABLED = datetime.timedelta(0)
# gRPC paths the gateway serves: the public API, health and reflection.
GRPC_PREFIXES = (
    f"/{GATEWAY_SERVICE_NAME}/",
    f"/{JOBS_SERVICE_NAME}/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
)
# The OpenAI API's families of paths. Envoy's own answers under them use the OpenAI envelope, so that an
# OpenAI client reads them, whether or not meshserve serves the path.
# Prefixes rather than one regex: RE2 refuses a pattern that long.
OPENAI_PATH_PREFIXES = (
    "/v1/chat/", "/v1/completions", "/v1/models", "/v1/embeddings", "/v1/responses", "/v1/audio/",
    "/v1/images/", "/v1/files", "/v1/batches", "/v1/moderations", "/v1/fine_tuning/", "/v1/assistants",
    "/v1/threads", "/v1/vector_stores", "/v1/uploads", "/v1/realtime",
)  # fmt: skip
UPLOAD_PATH = "/v1/files"
# The OpenAI routes meshserve serves: (how the path matches, the methods it takes).
_OPENAI_ROUTES = (
    (RouteMatch(path="/v1/chat/completions"), "POST"),
    (RouteMatch(path="/v1/completions"), "POST"),
    (RouteMatch(path="/v1/models"), "GET"),
    (RouteMatch(safe_regex=RegexMatcher(regex=r"^/v1/models/[^/]+$")), "GET"),
    (RouteMatch(path=UPLOAD_PATH), "POST"),
    (RouteMatch(safe_regex=RegexMatcher(regex=r"^/v1/files/[^/]+$")), "GET"),
    (RouteMatch(safe_regex=RegexMatcher(regex=r"^/v1/files/[^/]+/content$")), "GET"),
    (RouteMatch(path="/v1/batches"), "GET, POST"),
    (RouteMatch(safe_regex=RegexMatcher(regex=r"^/v1/batches/[^/]+$")), "GET"),
    (RouteMatch(safe_regex=RegexMatcher(regex=r"^/v1/batches/[^/]+/cancel$")), "POST"),
)


def route_configuration(config: EdgeConfig) -> RouteConfiguration:
    gateway = _forward(GATEWAY_CLUSTER, config)
    # gRPC streams pass through unbuffered: the gateway bounds each message itself (RESOURCE_EXHAUSTED).
    routes = [
        Route(match=RouteMatch(prefix=prefix), route=gateway, typed_per_filter_config=unbuffered())
        for prefix in GRPC_PREFIXES
    ]
    if config.auth_endpoints:
        # The admin API (keys, audit) is the authorization service's own.
        admin = RouteMatch(prefix=f"/{IDENTITY_SERVICE_NAME}/")
        routes.append(Route(match=admin, route=_forward(AUTH_CLUSTER, config), typed_per_filter_config=unbuffered()))
    if config.openai_endpoints:
        routes += _openai_routes(config)
    routes += [_wrong_method(RouteMatch(path=path), methods) for path, methods in _methods_by_literal_path().items()]
    routes += [_answer(RouteMatch(prefix=prefix), 404, _openai_body("not_found")) for prefix in OPENAI_PATH_PREFIXES]
    routes.append(_answer(RouteMatch(prefix="/"), 404, _status_body(5, "UNKNOWN_PATH", "no such path")))
    host = VirtualHost(name="meshserve", domains=["*"], routes=routes)
    return RouteConfiguration(name="edge_routes", virtual_hosts=[host])


def _methods_by_literal_path() -> dict[str, str]:
    """The methods each literal REST path takes ("GET, POST"); templated paths are left to the 404."""
    methods: dict[str, list[str]] = {}
    for binding in rest_bindings():
        if not binding.is_template:
            methods.setdefault(binding.path, []).append(binding.http_method)
    return {path: ", ".join(verbs) for path, verbs in methods.items()}


def _openai_routes(config: EdgeConfig) -> list[Route]:
    front = _forward(OPENAI_CLUSTER, config)
    served = [
        # A file upload streams to the front, which takes files far larger than the edge's body limit.
        Route(match=_with_method(match, method), route=front, typed_per_filter_config=_uploads_unbuffered(match))
        for match, method in _OPENAI_ROUTES
    ]
    refused = [
        _answer(match, 405, _openai_body("method_not_allowed"), allow=method) for match, method in _OPENAI_ROUTES
    ]
    return [*served, *refused]


def _uploads_unbuffered(match: RouteMatch) -> dict:
    return unbuffered() if match.path == UPLOAD_PATH else {}


def _with_method(match: RouteMatch, methods: str) -> RouteMatch:
    one_of = "|".join(method.strip() for method in methods.split(","))
    only = HeaderMatcher(name=":method", string_match=StringMatcher(safe_regex=RegexMatcher(regex=f"^({one_of})$")))
    return RouteMatch(path=match.path, safe_regex=match.safe_regex, headers=[only])


def _forward(cluster: str, config: EdgeConfig) -> RouteAction:
    return RouteAction(
        cluster=cluster,
        retry_policy=_unsent_requests_retried(),
        # The default 15s route timeout would cut long generations, so only the stream limits apply.
        timeout=_DISABLED,
        idle_timeout=config.stream_idle_timeout,
        max_stream_duration=RouteActionMaxStreamDuration(
            max_stream_duration=config.max_stream_duration,
            # A gRPC caller's deadline (grpc-timeout) is honoured, up to the same ceiling.
            grpc_timeout_header_max=config.max_stream_duration,
        ),
    )


def _unsent_requests_retried() -> RetryPolicy:
    """A request that never reached a replica (it died, or refused the stream) goes to another one, so a
    replica that dies costs only the streams it was serving. Nothing a replica may have begun is retried."""
    other_host = RetryPolicyRetryHostPredicate(
        name="envoy.retry_host_predicates.previous_hosts", typed_config=pack(PreviousHostsPredicate())
    )
    return RetryPolicy(
        retry_on="connect-failure,refused-stream,reset-before-request",
        num_retries=2,
        retry_host_predicate=[other_host],
        host_selection_retry_max_attempts=3,
    )


def _wrong_method(match: RouteMatch, methods: str) -> Route:
    message = f"this path takes {methods} only"
    return _answer(match, 405, _status_body(12, "METHOD_NOT_ALLOWED", message), allow=methods)


def _answer(match: RouteMatch, status: int, body: dict, allow: str | None = None) -> Route:
    headers = [] if allow is None else [HeaderValueOption(header=HeaderValue(key="allow", value=allow))]
    action = DirectResponseAction(
        status=status,
        body_format=SubstitutionFormatString(json_format=Struct.from_dict(body), content_type="application/json"),
    )
    return Route(match=match, direct_response=action, response_headers_to_add=headers)


_REQUEST_LINE = "%REQ(:METHOD)% %REQ(:PATH)%"


def _status_body(code: int, reason: str, message: str) -> dict:
    return {
        "code": code,
        "message": f"{message}: {_REQUEST_LINE}",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": ERROR_DOMAIN,
                "metadata": {"source": "edge"},
            }
        ],
    }


def _openai_body(code: str) -> dict:
    message = "Invalid URL" if code == "not_found" else "Method not allowed"
    return {"error": {"message": f"{message} ({_REQUEST_LINE})", "type": "invalid_request_error", "param": None,
                      "code": code}}  # fmt: skip
