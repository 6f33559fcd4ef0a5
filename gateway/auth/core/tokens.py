"""JWTs after Envoy's jwt_authn has checked them: the claims of a verified token as an identity, and the
failure of an unverified one as a refusal with a reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.shared.domain import Priority
from services.shared.errors import MeshError, unauthenticated
from services.shared.identity import ROLE_SCOPES, CallerLimits, Scope

# Where Envoy's jwt_authn puts a verified token's claims, and why it did not verify one: the edge's
# configuration (gateway/edge/auth.py) and the authorization service (servicer.py) both read these.
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD_KEY = "payload"
JWT_FAILURE_KEY = "failure"

# jwt_authn's failure messages (jwt_verify_lib's), by the words that tell them apart.
_FAILURES = (
    ("expired", "TOKEN_EXPIRED"),
    ("not yet valid", "TOKEN_NOT_YET_VALID"),
    ("issuer", "TOKEN_ISSUER_NOT_TRUSTED"),
    ("audience", "TOKEN_AUDIENCE_NOT_ALLOWED"),
    ("kid", "TOKEN_KEY_UNKNOWN"),
    ("alg", "TOKEN_ALGORITHM_NOT_ALLOWED"),
    ("verification fail", "TOKEN_SIGNATURE_INVALID"),
    ("form of header", "TOKEN_MALFORMED"),
)


@dataclass(frozen=True)
class TokenPolicy:
    """What a token grants besides its scopes: tokens carry no limits of their own."""

    limits: CallerLimits = field(default_factory=lambda: CallerLimits(max_priority=Priority.HIGH))


def refusal_for_failure(message: str) -> MeshError:
    lowered = message.lower()
    reason = next((reason for words, reason in _FAILURES if words in lowered), "TOKEN_INVALID")
    return unauthenticated(reason, f"the token was not accepted: {message}")


def subject_of(claims: Mapping[str, Any]) -> str:
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(subject, str) or not subject or not isinstance(issuer, str):
        raise unauthenticated("TOKEN_SUBJECT_MISSING", "the token names no subject (sub) or issuer (iss)")
    return f"jwt:{issuer}#{subject}"


def scopes_of(claims: Mapping[str, Any]) -> frozenset[Scope]:
    """Scopes from `scope` (space-separated), `scp` (a list or a string) and `roles`; unknown names grant nothing."""
    names = set(_words(claims.get("scope"))) | set(_words(claims.get("scp")))
    scopes = {scope for scope in Scope if scope.value in names}
    for role in _words(claims.get("roles")):
        scopes |= ROLE_SCOPES.get(role, frozenset())
    return frozenset(scopes)


def _words(claim: object) -> list[str]:
    if isinstance(claim, str):
        return claim.split()
    if isinstance(claim, list):
        return [item for item in claim if isinstance(item, str)]
    return []
