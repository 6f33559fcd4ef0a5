"""Envoy's own replies (no gateway to reach, the rate limit, JSON that does not parse) in the shape of every
other meshserve error: a google.rpc.Status as JSON, with an ErrorInfo whose reason says what happened.
Under the OpenAI API's paths they take OpenAI's error envelope instead, so OpenAI clients can read them.

Replies the gateway or the OpenAI front sends are not local replies and pass through untouched. Neither do
the authorization service's refusals, which are local replies but already in the surface's shape: a 503 of
its own (the key store is down) must not read as Envoy's EDGE_UPSTREAM_UNAVAILABLE.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.accesslog.v3 import (
    AccessLogFilter,
    AndFilter,
    ComparisonFilter,
    ComparisonFilterOp,
    HeaderFilter,
    MetadataFilter,
    OrFilter,
    StatusCodeFilter,
)
from envoy_data_plane.envoy.config.core.v3 import RuntimeUInt32, SubstitutionFormatString
from envoy_data_plane.envoy.config.route.v3 import HeaderMatcher
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
from services.shared.errors import ERROR_DOMAIN
from services.shared.identity import REFUSAL_METADATA_KEY

# The namespace ext_authz puts the authorization service's dynamic metadata under.
EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
# HTTP status of Envoy's reply -> (google.rpc.Code, ErrorInfo reason).
LOCAL_ERRORS = {
    400: (3, "MALFORMED_REQUEST"),
    429: (8, "RATE_LIMITED"),
    503: (14, "EDGE_UPSTREAM_UNAVAILABLE"),
    504: (4, "UPSTREAM_TIMEOUT"),
}
# The same replies in OpenAI's envelope: HTTP status -> error type.
OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def local_reply_config() -> LocalReplyConfig:
    # The first mapper that matches wins, so the OpenAI paths' mappers come first.
    openai = [_openai_mapper(status, kind, LOCAL_ERRORS[status][1]) for status, kind in OPENAI_ERROR_TYPES.items()]
    native = [_mapper(status, code, reason) for status, (code, reason) in LOCAL_ERRORS.items()]
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


def _status_is(status: int) -> AccessLogFilter:
    comparison = ComparisonFilter(
        op=ComparisonFilterOp.EQ,
        value=RuntimeUInt32(default_value=status, runtime_key=f"meshserve.local_reply.status_{status}"),
    )
    return AccessLogFilter(status_code_filter=StatusCodeFilter(comparison=comparison))


def _openai_mapper(status: int, kind: str, reason: str) -> ResponseMapper:
    under_prefix = [
        AccessLogFilter(
            header_filter=HeaderFilter(header=HeaderMatcher(name=":path", string_match=StringMatcher(prefix=prefix)))
        )
        for prefix in OPENAI_PATH_PREFIXES
    ]
    on_openai_path = AccessLogFilter(or_filter=OrFilter(filters=under_prefix))
    body = {"error": {"message": "%LOCAL_REPLY_BODY%", "type": kind, "param": None, "code": reason.lower()}}
    return ResponseMapper(
        filter=AccessLogFilter(and_filter=AndFilter(filters=[_status_is(status), on_openai_path])),
        body_format_override=SubstitutionFormatString(
            json_format=Struct.from_dict(body), content_type="application/json"
        ),
    )


def _mapper(status: int, code: int, reason: str) -> ResponseMapper:
    body = {
        "code": code,
        "message": "%LOCAL_REPLY_BODY%",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": ERROR_DOMAIN,
                "metadata": {"source": "edge"},
            }
        ],
    }
    return ResponseMapper(
        filter=_status_is(status),
        body_format_override=SubstitutionFormatString(
            json_format=Struct.from_dict(body), content_type="application/json"
        ),
    )
