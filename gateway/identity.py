"""Who a call to the gateway is for: the identity the edge established, trusted only from the edge itself
(or the OpenAI front, which relays it), and checked once more against the method's scope."""

from __future__ import annotations

import grpc

from gateway.auth.core.routes import METHOD_SCOPES
from services.shared.authorization import caller_identity
from services.shared.certs import spiffe_id
from services.shared.errors import permission_denied, unauthenticated
from services.shared.identity import IDENTITY_HEADER, Identity, decode_identity

# The mesh identities that may tell the gateway who a request is for: the edge, the OpenAI front behind it,
# and the job runner, which runs each job as the owner that submitted it.
_RELAYS = frozenset({spiffe_id("edge"), spiffe_id("openai"), spiffe_id("jobs")})


def identity_of(context: grpc.aio.ServicerContext, method_path: str) -> Identity:
    """The request's identity; raises UNAUTHENTICATED without one, PERMISSION_DENIED without the scope."""
    if caller_identity(context) not in _RELAYS:
        raise unauthenticated("NO_EDGE_IDENTITY", "only the edge says who a request is for")
    header = next((value for key, value in context.invocation_metadata() or () if key == IDENTITY_HEADER), None)
    if not header:
        raise unauthenticated("NO_EDGE_IDENTITY", "the request carries no identity from the edge")
    try:
        identity = decode_identity(str(header))
    except ValueError as error:
        raise unauthenticated("NO_EDGE_IDENTITY", f"the edge's identity header is not valid: {error}") from None
    needed = METHOD_SCOPES.get(method_path)
    if needed is not None and needed not in identity.scopes:
        raise permission_denied("SCOPE_MISSING", f"{method_path} needs the {needed.value} scope")
    return identity
