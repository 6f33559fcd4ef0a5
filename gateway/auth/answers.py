"""The authorization service's answers to Envoy: a request let in with its identity, or refused in the shape
of its surface (an OpenAI envelope, a google.rpc.Status as JSON, or a gRPC status for gRPC callers)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2, status_pb2

from gateway.auth.core.routes import is_grpc
from gateway.auth.wire import ext_authz_pb2 as wire
from gateway.openai.errors import from_mesh_error
from services.shared.errors import ErrorKind, MeshError, http_status_of
from services.shared.identity import (
    CLIENT_HEADERS,
    IDENTITY_HEADER,
    INTERNAL_HEADER_PREFIX,
    REFUSAL_METADATA_KEY,
    Identity,
    Surface,
    encode_identity,
)
from services.shared.status_details import to_status_proto

# Credentials go no further than the edge: nothing behind it needs them, and logs there never see them.
_CREDENTIAL_HEADERS = ("authorization", "x-api-key")
_OVERWRITE = wire.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
GRPC_STATUS_DETAILS = "grpc-status-details-bin"


def let_in(identity: Identity | None, headers: Iterable[str]) -> wire.CheckResponse:
    """Lets the request in with its identity, and without any internal header the client sent."""
    # Envoy removes after it sets: the identity header is overwritten, never removed.
    kept = CLIENT_HEADERS | ({IDENTITY_HEADER} if identity is not None else set())
    internal = [name for name in headers if name.startswith(INTERNAL_HEADER_PREFIX) and name not in kept]
    response = wire.CheckResponse(status=_code(code_pb2.OK))
    response.ok_response.headers_to_remove.extend([*internal, *_CREDENTIAL_HEADERS])
    if identity is not None:
        response.ok_response.headers.append(_header(IDENTITY_HEADER, encode_identity(identity)))
        response.dynamic_metadata.CopyFrom(_metadata({"subject": identity.subject}))
    return response


def refuse(error: MeshError, surface: Surface, content_type: str, challenge: str) -> wire.CheckResponse:
    status = http_status_of(error)
    response = wire.CheckResponse(status=_code(to_status_proto(error).code))
    denied = response.denied_response
    denied.status.code = status
    if status in (401, 403):
        denied.headers.append(_header("www-authenticate", challenge))
    if error.retry_after_seconds is not None:
        denied.headers.append(_header("retry-after", str(max(1, round(error.retry_after_seconds)))))
    if is_grpc(content_type):
        # Envoy answers a gRPC caller with a gRPC status of this HTTP status, and this as its message. The
        # google.rpc.Status with its ErrorInfo goes in the trailer every gRPC library reads details from; its
        # message must be the status message itself, or grpc-status refuses the details.
        denied.body = f"{error.reason}: {error.message}"
        status_proto = to_status_proto(error)
        status_proto.message = denied.body
        details = base64.b64encode(status_proto.SerializeToString()).decode().rstrip("=")
        denied.headers.append(_header(GRPC_STATUS_DETAILS, details))
        # The code itself too: Envoy's own mapping from the HTTP status knows 401, 403 and 503, but reads
        # 431 as UNKNOWN, where the caller must see RESOURCE_EXHAUSTED.
        denied.headers.append(_header("grpc-status", str(status_proto.code)))
    else:
        denied.headers.append(_header("content-type", "application/json"))
        denied.body = json.dumps(_body(error, surface), separators=(",", ":"))
    response.dynamic_metadata.CopyFrom(_metadata({"subject": "", REFUSAL_METADATA_KEY: error.reason}))
    return response


def challenge_for(error: MeshError) -> str:
    """The WWW-Authenticate value of a refusal (RFC 6750)."""
    if error.reason == "CREDENTIAL_MISSING":
        return 'Bearer realm="meshserve"'
    kind = "insufficient_scope" if error.kind is ErrorKind.PERMISSION_DENIED else "invalid_token"
    description = error.message.replace("\\", "").replace('"', "'")
    return f'Bearer realm="meshserve", error="{kind}", error_description="{description}"'


def _body(error: MeshError, surface: Surface) -> dict:
    if surface is Surface.OPENAI:
        return from_mesh_error(error).envelope()
    return json_format.MessageToDict(to_status_proto(error), preserving_proto_field_name=True)


def _header(name: str, value: str) -> wire.HeaderValueOption:
    return wire.HeaderValueOption(header=wire.HeaderValue(key=name, value=value), append_action=_OVERWRITE)


def _code(code: int) -> status_pb2.Status:
    return status_pb2.Status(code=code)


def _metadata(fields: dict[str, str]) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    metadata.update(fields)
    return metadata
