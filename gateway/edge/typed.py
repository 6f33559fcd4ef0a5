"""Typed envoy-data-plane helpers shared by the edge modules, and the JSON that Envoy reads."""

from __future__ import annotations

from typing import Any as JsonValue

import betterproto2
from envoy_data_plane.envoy.config.core.v3 import Address, SocketAddress
from envoy_data_plane.google.protobuf import Any

from gateway.edge.config import HostPort


def pack(message: betterproto2.Message) -> Any:
    """Wraps a typed message in google.protobuf.Any, as typed_config fields want.

    Any.pack takes the type URL from the message pool, which every envoy_data_plane module fills on
    import, and Any.to_dict later writes it back as "@type".
    """
    return Any.pack(message)


def socket_address(address: HostPort) -> Address:
    host, port = address
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _proto_field_name(name: str) -> str:
    # betterproto2's attribute names are the proto field names, but both of its Casing styles
    # re-case them wrongly around digits ("consecutive_5xx" becomes "consecutive5Xx" or
    # "consecutive_5_xx"), which Envoy rejects as unknown fields. The proto names are always valid JSON.
    return name


def to_json_dict(message: betterproto2.Message) -> dict[str, JsonValue]:
    """The proto3 JSON form of a message, with the .proto field names."""
    return message.to_dict(casing=_proto_field_name)  # type: ignore[arg-type]
