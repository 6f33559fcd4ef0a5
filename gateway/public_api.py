"""The public gRPC APIs' methods and their REST bindings, read from the protos' google.api.http options.

The gateway serves meshserve.gateway.v1 and meshserve.jobs.v1; the authorization service serves the admin
API, meshserve.identity.v1. The edge routes and transcodes all three.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.api import annotations_pb2
from google.protobuf.descriptor import ServiceDescriptor
from meshserve.gateway.v1 import gateway_pb2
from meshserve.identity.v1 import identity_pb2
from meshserve.jobs.v1 import jobs_pb2

GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
IDENTITY_SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
JOBS_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobsService"]
GATEWAY_SERVICE_NAME = GATEWAY_SERVICE.full_name
IDENTITY_SERVICE_NAME = IDENTITY_SERVICE.full_name
JOBS_SERVICE_NAME = JOBS_SERVICE.full_name
_SERVICES = (GATEWAY_SERVICE, JOBS_SERVICE, IDENTITY_SERVICE)


@dataclass(frozen=True)
class RestBinding:
    # A literal path, or a template such as /v1/admin/keys/{key_id}:revoke.
    path: str
    http_method: str
    # The gRPC path the transcoder turns it into: /meshserve.gateway.v1.GatewayService/Generate.
    grpc_path: str

    @property
    def is_template(self) -> bool:
        return "{" in self.path


def grpc_paths(service: ServiceDescriptor | None = None) -> list[str]:
    services = _SERVICES if service is None else (service,)
    return [f"/{each.full_name}/{method.name}" for each in services for method in each.methods]


def rest_bindings() -> list[RestBinding]:
    bindings = []
    for service in _SERVICES:
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb and verb != "custom":
                bindings.append(RestBinding(getattr(rule, verb), verb.upper(), f"/{service.full_name}/{method.name}"))
    return bindings
