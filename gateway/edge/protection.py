"""What keeps the edge standing when clients misbehave: the overload manager, connection and header limits,
timeouts against slow clients, a cap on streams per connection, and a request body limit.

Each limit is answered in the caller's terms where Envoy can answer at all (local_replies.py): 503
EDGE_OVERLOADED when Envoy's heap is nearly full, 413 for a body over the limit, 408 for request headers
that take too long. What Envoy cannot answer (a connection over the cap, an unfinished TLS handshake, an
idle connection) it closes.
"""

from __future__ import annotations

import datetime

from envoy_data_plane.envoy.config.core.v3 import Http2ProtocolOptions, HttpProtocolOptions
from envoy_data_plane.envoy.config.overload.v3 import (
    OverloadAction,
    OverloadManager,
    ResourceMonitor,
    ThresholdTrigger,
    Trigger,
)
from envoy_data_plane.envoy.extensions.filters.http.buffer.v3 import Buffer, BufferPerRoute
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpFilter
from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections.v3 import DownstreamConnectionsConfig
from envoy_data_plane.envoy.extensions.resource_monitors.fixed_heap.v3 import FixedHeapConfig
from envoy_data_plane.google.protobuf import Any

from gateway.edge.config import EdgeLimits
from gateway.edge.typed import pack

BUFFER_FILTER = "envoy.filters.http.buffer"
_HEAP = "envoy.resource_monitors.fixed_heap"
_CONNECTIONS = "envoy.resource_monitors.global_downstream_max_connections"


def overload_manager(limits: EdgeLimits) -> OverloadManager:
    """Heap and connection monitors. Near the heap limit Envoy gives memory back, then answers new requests
    503 until it is below again; past the connection cap it closes each new connection as it accepts it."""
    monitors = [
        ResourceMonitor(name=_HEAP, typed_config=pack(FixedHeapConfig(max_heap_size_bytes=limits.max_heap_bytes))),
        ResourceMonitor(
            name=_CONNECTIONS,
            typed_config=pack(DownstreamConnectionsConfig(max_active_downstream_connections=limits.max_connections)),
        ),
    ]
    actions = [
        _when_heap_above("envoy.overload_actions.shrink_heap", limits.shrink_heap_at),
        _when_heap_above("envoy.overload_actions.stop_accepting_requests", limits.refuse_requests_at),
    ]
    return OverloadManager(
        refresh_interval=datetime.timedelta(milliseconds=250), resource_monitors=monitors, actions=actions
    )


def _when_heap_above(action: str, fraction: float) -> OverloadAction:
    return OverloadAction(name=action, triggers=[Trigger(name=_HEAP, threshold=ThresholdTrigger(value=fraction))])


def http_protocol_options(limits: EdgeLimits) -> HttpProtocolOptions:
    # A connection with no stream for idle_timeout is closed: idle connections cost a slot of the cap.
    return HttpProtocolOptions(idle_timeout=limits.idle_timeout, max_headers_count=limits.max_headers_count)


def http2_protocol_options(limits: EdgeLimits) -> Http2ProtocolOptions:
    # Envoy's edge guidance: a client opens at most this many streams at once on one connection (more wait
    # on the client's side, none fails), and the windows bound what one stream or connection buffers.
    return Http2ProtocolOptions(
        max_concurrent_streams=limits.max_concurrent_streams,
        initial_stream_window_size=64 * 1024,
        initial_connection_window_size=1024 * 1024,
    )


def body_limit_filter(limits: EdgeLimits) -> HttpFilter:
    """Buffers a whole request body, up to the limit, before it goes further; over it, 413.

    Only for routes whose bodies are one message (REST, the OpenAI API): gRPC streams are never buffered
    (the gateway bounds each message itself), nor are file uploads, which the OpenAI front bounds itself.
    """
    return HttpFilter(name=BUFFER_FILTER, typed_config=pack(Buffer(max_request_bytes=limits.max_request_body_bytes)))


def unbuffered() -> dict[str, Any]:
    """A route's per-filter config that turns the body limit's buffering off."""
    return {BUFFER_FILTER: pack(BufferPerRoute(disabled=True))}
