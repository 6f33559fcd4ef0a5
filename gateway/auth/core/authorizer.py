"""The edge's decision for one request: who it is for, or why it is refused (401, 403, 431, 503)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.auth.core.credentials import Credential, CredentialKind, presented_credential
from gateway.auth.core.routes import RouteRule, rule_for
from gateway.auth.core.tokens import TokenPolicy, refusal_for_failure, scopes_of, subject_of
from services.identity.api_keys import key_id_of, secret_matches
from services.shared.domain import Priority
from services.shared.errors import permission_denied, unauthenticated, unavailable
from services.shared.header_limits import MAX_REQUEST_HEADER_BYTES, check_header_size
from services.shared.identity import CallerLimits, Identity, Scope
from services.store.errors import StoreUnavailable
from services.store.records import KeyRecord


class KeyDirectory(Protocol):
    async def find(self, key_id: str, recheck: bool = False) -> KeyRecord | None:
        """The key's record; `recheck` asks for a newer one than a cache may hold. Raises StoreUnavailable."""
        ...


@dataclass(frozen=True)
class AccessRequest:
    method: str
    path: str
    query: str
    # Lower-case names, as Envoy sends them.
    headers: Mapping[str, str]
    # From jwt_authn: the verified claims of the request's token, or why it was not verified.
    token_claims: Mapping[str, Any] | None = None
    token_failure: str | None = None


class Authorizer:
    def __init__(self, keys: KeyDirectory, tokens: TokenPolicy, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._tokens = tokens
        self._clock = clock

    async def check(self, request: AccessRequest) -> Identity | None:
        """The caller's identity; None on the anonymous health routes. Raises MeshError: UNAUTHENTICATED (401),
        PERMISSION_DENIED (403), HEADERS_TOO_LARGE (431, RESOURCE_EXHAUSTED over gRPC), or UNAVAILABLE (503)
        when the key store cannot be reached."""
        # First: a request this large is refused before any of its headers is read as a credential.
        check_header_size(request.headers.items(), MAX_REQUEST_HEADER_BYTES)
        rule = rule_for(request.method, request.path, request.headers.get("content-type", ""))
        if rule is None:
            return None
        credential = presented_credential(request.headers, request.query)
        if credential.kind is CredentialKind.API_KEY:
            subject, scopes, limits = await self._key_holder(credential)
        else:
            subject, scopes, limits = self._token_holder(request)
        _check_scope(rule, subject, scopes)
        return Identity(subject, scopes, limits, rule.surface, rule.route)

    async def _key_holder(self, credential: Credential) -> tuple[str, frozenset[Scope], CallerLimits]:
        key_id = key_id_of(credential.value)
        if key_id is None:
            raise unauthenticated("KEY_INVALID", "the API key is not valid")
        record = await self._record(key_id)
        now = self._clock()
        if record is not None and not secret_matches(record, credential.value, now):
            # Perhaps the secret a rotation has just issued, newer than the record kept.
            record = await self._record(key_id, recheck=True)
        if record is None or not secret_matches(record, credential.value, now):
            raise unauthenticated("KEY_INVALID", "the API key is not valid")
        if record.revoked_at is not None and record.revoked_at <= now:
            raise unauthenticated("KEY_REVOKED", f"the API key {key_id} was revoked", subject=f"key:{key_id}")
        if record.expires_at is not None and record.expires_at <= now:
            raise unauthenticated("KEY_EXPIRED", f"the API key {key_id} has expired", subject=f"key:{key_id}")
        limits = CallerLimits(
            record.requests_per_minute, record.tokens_per_minute, record.max_concurrent, Priority[record.max_priority]
        )
        scopes = frozenset(Scope(name) for name in record.scopes if name in {scope.value for scope in Scope})
        return f"key:{key_id}", scopes, limits

    async def _record(self, key_id: str, recheck: bool = False) -> KeyRecord | None:
        try:
            return await self._keys.find(key_id, recheck)
        except StoreUnavailable as error:
            raise unavailable("CREDENTIAL_STORE_UNAVAILABLE", f"keys cannot be checked now: {error}", 1.0) from error

    def _token_holder(self, request: AccessRequest) -> tuple[str, frozenset[Scope], CallerLimits]:
        if request.token_claims is None:
            raise refusal_for_failure(request.token_failure or "no trusted issuer verified it")
        return subject_of(request.token_claims), scopes_of(request.token_claims), self._tokens.limits


def _check_scope(rule: RouteRule, subject: str, scopes: frozenset[Scope]) -> None:
    if rule.scope is None or rule.scope in scopes:
        return
    held = ", ".join(sorted(scope.value for scope in scopes)) or "none"
    raise permission_denied(
        "SCOPE_MISSING",
        f"{rule.route} needs the {rule.scope.value} scope; the credential has {held}",
        scope=rule.scope.value,
        subject=subject,
    )
