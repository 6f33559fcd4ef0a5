"""Who a request is for, as the edge's authorization service established it from the caller's credential.

The edge sets it on every request it lets in, in one header, after removing every internal header the client
sent; mesh services read it only from callers whose certificate says they are the edge (or the OpenAI
front, which relays it). It names the caller the scheduler's fairness, the per-key limits and the audit log
use, and carries the limits the credential grants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from services.shared.domain import Priority

IDENTITY_HEADER = "x-meshserve-identity"
# Headers a client may send that mesh services read; every other x-meshserve-* header is the edge's own.
CLIENT_HEADERS = frozenset({"x-meshserve-priority", "x-meshserve-timeout-seconds"})
INTERNAL_HEADER_PREFIX = "x-meshserve-"
# The key of the dynamic metadata the authorization service sets on a refusal. The edge's local-reply
# mappers leave a reply so marked as it is: it is already in its surface's shape.
REFUSAL_METADATA_KEY = "refused"


class Scope(Enum):
    INFERENCE = "inference"
    JOBS = "jobs"
    ADMIN = "admin"


# The roles of a JWT's `roles` claim, as the scopes they grant.
ROLE_SCOPES = {
    "admin": frozenset(Scope),
    "developer": frozenset({Scope.INFERENCE, Scope.JOBS}),
    "inference": frozenset({Scope.INFERENCE}),
}


class Surface(Enum):
    REST = "rest"
    GRPC = "grpc"
    OPENAI = "openai"
    # A job's run, which the job runner starts for the job's owner.
    JOBS = "jobs"


@dataclass(frozen=True)
class CallerLimits:
    """What one credential may use; None is no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    # Asking above it is capped to it, by the scheduler.
    max_priority: Priority = Priority.CRITICAL


@dataclass(frozen=True)
class Identity:
    # "key:<key id>" for an API key, "jwt:<issuer>#<sub>" for a token.
    subject: str
    scopes: frozenset[Scope]
    limits: CallerLimits
    surface: Surface
    # "POST /v1/chat/completions", or a gRPC method path.
    route: str


def encode_identity(identity: Identity) -> str:
    limits = identity.limits
    return json.dumps(
        {
            "sub": identity.subject,
            "scopes": sorted(scope.value for scope in identity.scopes),
            "rpm": limits.requests_per_minute,
            "tpm": limits.tokens_per_minute,
            "concurrent": limits.max_concurrent,
            "max_priority": limits.max_priority.name,
            "surface": identity.surface.value,
            "route": identity.route,
        },
        separators=(",", ":"),
    )


def decode_identity(text: str) -> Identity:
    """Raises ValueError on anything but what encode_identity writes."""
    try:
        fields = json.loads(text)
        limits = CallerLimits(
            _optional_count(fields["rpm"]),
            _optional_count(fields["tpm"]),
            _optional_count(fields["concurrent"]),
            Priority[fields["max_priority"]],
        )
        return Identity(
            str(fields["sub"]),
            frozenset(Scope(scope) for scope in fields["scopes"]),
            limits,
            Surface(fields["surface"]),
            str(fields["route"]),
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"not an identity header: {error}") from error


def _optional_count(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value
