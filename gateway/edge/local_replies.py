"""Envoy's own replies (no gateway to reach, the rate limit, an overload, a body or headers over the limit, a
client too slow to send its headers, JSON that does not parse) in the shape of every other meshserve error:
a google.rpc.Status as JSON, with an ErrorInfo whose reason says what happened.
Under the OpenAI API's paths they take OpenAI's error envelope instead, so OpenAI clients can read them.

Replies the gateway or the OpenAI front sends are not local replies and pass through untouched. Neither do
the authorization service's refusals, which are local replies but already in the surface's shape: a 503 of
its own (the key store is down) must not read as Envoy's EDGE_UPSTREAM_UNAVAILABLE.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy_data_plane.envoy.config.accesslog.v3 import (
    AccessLogFilter,
    AndFilter,
    ComparisonFilter,
    ComparisonFilterOp,
    ExtensionFilter,
    HeaderFilter,
    MetadataFilter,
    OrFilter,
    StatusCodeFilter,
)
from envoy_data_plane.envoy.config.core.v3 import RuntimeUInt32, SubstitutionFormatString
from envoy_data_plane.envoy.config.route.v3 import HeaderMatcher
from envoy_data_plane.envoy.extensions.access_loggers.filters.cel.v3 import ExpressionFilter
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    LocalReplyConfig,
    ResponseMapper,
)
from envoy_data_plane.envoy.type.matcher.v3 import (
    MetadataMatcher,
    MetadataMatcherPathSegment,
    StringMatcher,
    ValueMatcher,
)
from envoy_data_plane.google.protobuf import Struct

from gateway.edge.routes import OPENAI_PATH_PREFIXES
from gateway.edge.typed import pack
from services.shared.errors import ERROR_DOMAIN
from services.shared.identity import REFUSAL_METADATA_KEY

# The namespace ext_authz puts the authorization service's dynamic metadata under.
EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"


@dataclass(frozen=True)
class LocalError:
    """One kind of Envoy reply: its HTTP status, google.rpc.Code, ErrorInfo reason and OpenAI error type.

    `details` narrows it to replies whose response code details are these ("overload": the overload manager
    refused it). Envoy sets its response flag only after the reply is formed, so the details are what a
    local reply mapper can see.
    """

    status: int
    code: int
    reason: str
    openai_type: str
    details: str | None = None


# The first that matches a reply wins, so a narrower one comes before the plain one of its status.
LOCAL_ERRORS = (
    LocalError(400, 3, "MALFORMED_REQUEST", "invalid_request_error"),
    LocalError(408, 4, "REQUEST_HEADERS_TIMEOUT", "timeout_error"),
    LocalError(413, 8, "REQUEST_TOO_LARGE", "invalid_request_error"),
    LocalError(429, 8, "RATE_LIMITED", "rate_limit_error"),
    LocalError(431, 8, "HEADERS_TOO_LARGE", "invalid_request_error"),
    LocalError(503, 14, "EDGE_OVERLOADED", "service_unavailable_error", details="overload"),
    LocalError(503, 14, "EDGE_UPSTREAM_UNAVAILABLE", "service_unavailable_error"),
    LocalError(504, 4, "UPSTREAM_TIMEOUT", "timeout_error"),
)


def local_reply_config() -> LocalReplyConfig:
    # The first mapper that matches wins, so the OpenAI paths' mappers come first.
    openai = [_openai_mapper(error) for error in LOCAL_ERRORS]
    native = [_mapper(error) for error in LOCAL_ERRORS]
    return LocalReplyConfig(mappers=[_authorization_refusals_as_they_are(), *openai, *native])


def _authorization_refusals_as_they_are() -> ResponseMapper:
    # Matches first and overrides nothing, so no later mapper rewrites the refusal's body.
    refused = MetadataMatcher(
        filter=EXT_AUTHZ_NAMESPACE,
        path=[MetadataMatcherPathSegment(key=REFUSAL_METADATA_KEY)],
        value=ValueMatcher(present_match=True),
    )
    marked = MetadataFilter(matcher=refused, match_if_key_not_found=False)
    return ResponseMapper(filter=AccessLogFilter(metadata_filter=marked))


def _reply_is(error: LocalError) -> AccessLogFilter:
    comparison = ComparisonFilter(
        op=ComparisonFilterOp.EQ,
        value=RuntimeUInt32(default_value=error.status, runtime_key=f"meshserve.local_reply.status_{error.status}"),
    )
    status = AccessLogFilter(status_code_filter=StatusCodeFilter(comparison=comparison))
    if error.details is None:
        return status
    expression = ExpressionFilter(expression=f"response.code_details == '{error.details}'")
    detailed = AccessLogFilter(extension_filter=ExtensionFilter(name=CEL_FILTER, typed_config=pack(expression)))
    return AccessLogFilter(and_filter=AndFilter(filters=[status, detailed]))


def _openai_mapper(error: LocalError) -> ResponseMapper:
    under_prefix = [
        AccessLogFilter(
            header_filter=HeaderFilter(header=HeaderMatcher(name=":path", string_match=StringMatcher(prefix=prefix)))
        )
        for prefix in OPENAI_PATH_PREFIXES
    ]
    on_openai_path = AccessLogFilter(or_filter=OrFilter(filters=under_prefix))
    body = {"error": {"message": "%LOCAL_REPLY_BODY%", "type": error.openai_type, "param": None,
                      "code": error.reason.lower()}}  # fmt: skip
    return ResponseMapper(
        filter=AccessLogFilter(and_filter=AndFilter(filters=[_reply_is(error), on_openai_path])),
        body_format_override=SubstitutionFormatString(
            json_format=Struct.from_dict(body), content_type="application/json"
        ),
    )


def _mapper(error: LocalError) -> ResponseMapper:
    body = {
        "code": error.code,
        "message": "%LOCAL_REPLY_BODY%",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": error.reason,
                "domain": ERROR_DOMAIN,
                "metadata": {"source": "edge"},
            }
        ],
    }
    return ResponseMapper(
        filter=_reply_is(error),
        body_format_override=SubstitutionFormatString(
            json_format=Struct.from_dict(body), content_type="application/json"
        ),
    )
