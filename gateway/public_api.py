"""The public gRPC API's methods and their REST bindings, read from the protos' google.api.http options."""

from __future__ import annotations

from dataclasses import dataclass

from google.api import annotations_pb2
from meshserve.gateway.v1 import gateway_pb2

GATEWAY_SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


@dataclass(frozen=True)
class RestBinding:
    path: str
    http_method: str
    # The gRPC path the transcoder turns it into: /meshserve.gateway.v1.GatewayService/Generate.
    grpc_path: str


def grpc_paths() -> list[str]:
    return [f"/{GATEWAY_SERVICE_NAME}/{method.name}" for method in _methods()]


def rest_bindings() -> list[RestBinding]:
    bindings = []
    for method in _methods():
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        if verb and verb != "custom":
            bindings.append(RestBinding(getattr(rule, verb), verb.upper(), f"/{GATEWAY_SERVICE_NAME}/{method.name}"))
    return bindings


def _methods() -> list:
    return list(gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].methods)
