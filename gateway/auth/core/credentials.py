"""Finding the one credential a request presents, and refusing every ambiguous or misplaced one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl

from services.identity.api_keys import KEY_PREFIX
from services.shared.errors import unauthenticated

# Far above any key (56 characters) or sensible token; a bigger one is refused before any parsing.
MAX_CREDENTIAL_LENGTH = 8192
# Query parameters that tools use for keys: refused, because URLs end up in logs and browser histories.
_QUERY_CREDENTIAL_NAMES = frozenset({"api_key", "api-key", "apikey", "key", "access_token", "token"})


class CredentialKind(Enum):
    API_KEY = "api_key"
    JWT = "jwt"


@dataclass(frozen=True)
class Credential:
    kind: CredentialKind
    value: str


def presented_credential(headers: Mapping[str, str], query: str) -> Credential:
    """The credential in `Authorization: Bearer` or `x-api-key`; raises an UNAUTHENTICATED MeshError otherwise."""
    bearer = _bearer(headers.get("authorization"))
    api_key = headers.get("x-api-key")
    if bearer is not None and api_key is not None and bearer != api_key:
        raise unauthenticated("CREDENTIAL_AMBIGUOUS", "send one credential: Authorization or x-api-key, not both")
    value = bearer if bearer is not None else api_key
    if value is None:
        if _QUERY_CREDENTIAL_NAMES.intersection(name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)):
            raise unauthenticated(
                "CREDENTIAL_IN_QUERY", "credentials in the URL are not accepted: send Authorization: Bearer <key>"
            )
        raise unauthenticated("CREDENTIAL_MISSING", "this route needs a credential: send Authorization: Bearer <key>")
    if not value or len(value) > MAX_CREDENTIAL_LENGTH or not value.isascii() or not value.isprintable():
        raise unauthenticated("CREDENTIAL_MALFORMED", "the credential is empty, too long or not printable ASCII")
    if value.startswith(KEY_PREFIX):
        return Credential(CredentialKind.API_KEY, value)
    if value.count(".") == 2:
        return Credential(CredentialKind.JWT, value)
    raise unauthenticated("CREDENTIAL_MALFORMED", "the credential is neither a meshserve API key nor a JWT")


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise unauthenticated("CREDENTIAL_MALFORMED", "the Authorization header must be `Bearer <credential>`")
    token = token.strip()
    if not token or " " in token:
        raise unauthenticated("CREDENTIAL_MALFORMED", "the Authorization header must be `Bearer <credential>`")
    return token
