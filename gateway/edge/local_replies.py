"""Envoy's own replies (no gateway to reach, the rate limit, JSON that does not parse) in the shape of every
other meshserve error: a google.rpc.Status as JSON, with an ErrorInfo whose reason says what happened.

Replies the gateway sends are not local replies and pass through untouched.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.accesslog.v3 import (
    AccessLogFilter,
    ComparisonFilter,
    ComparisonFilterOp,
    StatusCodeFilter,
)
from envoy_data_plane.envoy.config.core.v3 import RuntimeUInt32, SubstitutionFormatString
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    LocalReplyConfig,
    ResponseMapper,
)
from envoy_data_plane.google.protobuf import Struct

from services.shared.errors import ERROR_DOMAIN

# HTTP status of Envoy's reply -> (google.rpc.Code, ErrorInfo reason).
LOCAL_ERRORS = {
    400: (3, "MALFORMED_REQUEST"),
    429: (8, "RATE_LIMITED"),
    503: (14, "EDGE_UPSTREAM_UNAVAILABLE"),
    504: (4, "UPSTREAM_TIMEOUT"),
}


def local_reply_config() -> LocalReplyConfig:
    return LocalReplyConfig(mappers=[_mapper(status, code, reason) for status, (code, reason) in LOCAL_ERRORS.items()])


def _mapper(status: int, code: int, reason: str) -> ResponseMapper:
    comparison = ComparisonFilter(
        op=ComparisonFilterOp.EQ,
        value=RuntimeUInt32(default_value=status, runtime_key=f"meshserve.local_reply.status_{status}"),
    )
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
        filter=AccessLogFilter(status_code_filter=StatusCodeFilter(comparison=comparison)),
        body_format_override=SubstitutionFormatString(
            json_format=Struct.from_dict(body), content_type="application/json"
        ),
    )
