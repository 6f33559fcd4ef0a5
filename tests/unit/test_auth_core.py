"""The authorization service's decisions, pure: credentials found or refused, tokens' claims as identities,
scopes per route, and keys checked against their hashes on an injected clock."""

from __future__ import annotations

import pytest

from gateway.auth.core.authorizer import AccessRequest, Authorizer
from gateway.auth.core.credentials import CredentialKind, presented_credential
from gateway.auth.core.routes import rule_for, unprotected_methods
from gateway.auth.core.tokens import TokenPolicy, refusal_for_failure, scopes_of, subject_of
from services.identity.api_keys import hash_key, key_id_of, new_api_key, new_secret_for, secret_matches
from services.shared.domain import Priority
from services.shared.errors import ErrorKind, MeshError, http_status_of
from services.shared.header_limits import MAX_REQUEST_HEADER_BYTES
from services.shared.identity import Scope, Surface
from services.store.errors import StoreUnavailable
from services.store.records import KeyRecord

NOW = 1_000_000.0


def record(key: str, **changes: object) -> KeyRecord:
    fields = dict(key_id=key_id_of(key), name="k", secret_hash=hash_key(key), scopes=("inference",),
                  max_priority="HIGH", requests_per_minute=60, tokens_per_minute=None, max_concurrent=2,
                  created_at=NOW - 10, expires_at=None, revoked_at=None, updated_at=NOW - 10)  # fmt: skip
    return KeyRecord(**{**fields, **changes})  # type: ignore[arg-type]


class Directory:
    def __init__(self, *records: KeyRecord, down: bool = False) -> None:
        self.records = {r.key_id: r for r in records}
        self.down = down

    async def find(self, key_id: str, recheck: bool = False) -> KeyRecord | None:
        if self.down:
            raise StoreUnavailable("the store is down")
        return self.records.get(key_id)


def access(path: str = "/v1/generate", method: str = "POST", **headers: str) -> AccessRequest:
    return AccessRequest(method, path, "", {name.replace("_", "-"): value for name, value in headers.items()})


async def refusal(authorizer: Authorizer, request: AccessRequest) -> MeshError:
    with pytest.raises(MeshError) as refused:
        await authorizer.check(request)
    return refused.value


def test_keys_name_their_id_and_only_their_hash_is_compared() -> None:
    key_id, key = new_api_key()
    assert key_id_of(key) == key_id and key.startswith(f"msk_{key_id}_")
    assert key_id_of("msk_nothex_x") is None and key_id_of(key + "x") is None
    assert secret_matches(record(key), key, NOW)
    assert not secret_matches(record(key), new_secret_for(key_id), NOW)


def test_a_rotated_secret_works_only_within_its_grace() -> None:
    key_id, old = new_api_key()
    new = new_secret_for(key_id)
    rotated = record(new, previous_secret_hash=hash_key(old), previous_valid_until=NOW + 60)
    assert secret_matches(rotated, old, NOW) and not secret_matches(rotated, old, NOW + 61)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "CREDENTIAL_MISSING"),
        ({"authorization": "Basic abc"}, "CREDENTIAL_MALFORMED"),
        ({"authorization": "Bearer"}, "CREDENTIAL_MALFORMED"),
        ({"authorization": "Bearer a b"}, "CREDENTIAL_MALFORMED"),
        ({"authorization": "Bearer " + "x" * 9000}, "CREDENTIAL_MALFORMED"),
        ({"authorization": "Bearer plain"}, "CREDENTIAL_MALFORMED"),
        ({"authorization": "Bearer msk_a", "x-api-key": "msk_b"}, "CREDENTIAL_AMBIGUOUS"),
    ],
)
def test_credentials_that_cannot_be_read_are_refused_with_a_reason(headers: dict, reason: str) -> None:
    with pytest.raises(MeshError) as refused:
        presented_credential(headers, "")
    assert (refused.value.kind, refused.value.reason) == (ErrorKind.UNAUTHENTICATED, reason)


def test_a_key_in_the_url_is_refused_and_said_so() -> None:
    with pytest.raises(MeshError) as refused:
        presented_credential({}, "model=x&api_key=msk_k")
    assert refused.value.reason == "CREDENTIAL_IN_QUERY"


def test_keys_and_tokens_are_told_apart() -> None:
    assert presented_credential({"x-api-key": "msk_k"}, "").kind is CredentialKind.API_KEY
    assert presented_credential({"authorization": "bearer a.b.c"}, "").kind is CredentialKind.JWT


def test_every_public_method_has_a_scope_and_only_health_is_anonymous() -> None:
    assert unprotected_methods() == []
    grpc = "application/grpc"
    assert rule_for("POST", "/grpc.health.v1.Health/Check", grpc) is None
    assert rule_for("POST", "/meshserve.gateway.v1.GatewayService/GetGpuStatus", grpc).scope is Scope.ADMIN
    assert rule_for("GET", "/v1/gpu/status", "").scope is Scope.ADMIN
    assert rule_for("POST", "/v1/generate", "application/json").scope is Scope.INFERENCE
    openai = rule_for("GET", "/v1/models/gemma-3-270m?x=1", "")
    assert (openai.surface, openai.scope, openai.route) == (
        Surface.OPENAI,
        Scope.INFERENCE,
        "GET /v1/models/gemma-3-270m",
    )
    unknown = rule_for("GET", "/v1/nope", "")
    assert unknown is not None and unknown.scope is None, "unknown paths still need a credential"


def test_token_scopes_come_from_scope_scp_and_roles() -> None:
    assert scopes_of({"scope": "inference jobs bogus"}) == {Scope.INFERENCE, Scope.JOBS}
    assert scopes_of({"scp": ["admin"]}) == {Scope.ADMIN}
    assert scopes_of({"roles": ["developer"]}) == {Scope.INFERENCE, Scope.JOBS}
    assert scopes_of({"roles": "admin"}) == set(Scope)
    assert scopes_of({"scope": 7}) == frozenset()
    assert subject_of({"iss": "https://idp", "sub": "ada"}) == "jwt:https://idp#ada"
    with pytest.raises(MeshError):
        subject_of({"iss": "https://idp"})


@pytest.mark.parametrize(
    ("message", "reason"),
    [("Jwt is expired", "TOKEN_EXPIRED"), ("Jwt not yet valid", "TOKEN_NOT_YET_VALID"),
     ("Jwt issuer is not configured", "TOKEN_ISSUER_NOT_TRUSTED"),
     ("Audiences in Jwt are not allowed", "TOKEN_AUDIENCE_NOT_ALLOWED"),
     ("Jwks doesn't have key to match kid or alg from Jwt", "TOKEN_KEY_UNKNOWN"),
     ("Jwt verification fails", "TOKEN_SIGNATURE_INVALID"), ("something new", "TOKEN_INVALID")],
)  # fmt: skip
def test_jwt_authn_failures_become_reasons(message: str, reason: str) -> None:
    assert refusal_for_failure(message).reason == reason


async def test_a_valid_key_becomes_its_identity_with_its_limits() -> None:
    key_id, key = new_api_key()
    authorizer = Authorizer(Directory(record(key)), TokenPolicy(), clock=lambda: NOW)
    identity = await authorizer.check(access(authorization=f"Bearer {key}"))
    assert identity is not None and identity.subject == f"key:{key_id}"
    assert identity.limits.requests_per_minute == 60 and identity.limits.max_priority is Priority.HIGH
    assert (identity.surface, identity.route) == (Surface.REST, "POST /v1/generate")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"revoked_at": NOW - 1}, "KEY_REVOKED"), ({"expires_at": NOW}, "KEY_EXPIRED"),
     ({"secret_hash": "0" * 64}, "KEY_INVALID")],
)  # fmt: skip
async def test_revoked_expired_and_wrong_keys_are_refused(changes: dict, reason: str) -> None:
    _, key = new_api_key()
    authorizer = Authorizer(Directory(record(key, **changes)), TokenPolicy(), clock=lambda: NOW)
    assert (await refusal(authorizer, access(authorization=f"Bearer {key}"))).reason == reason


async def test_a_key_without_the_routes_scope_is_forbidden_not_unauthenticated() -> None:
    _, key = new_api_key()
    authorizer = Authorizer(Directory(record(key)), TokenPolicy(), clock=lambda: NOW)
    refused = await refusal(authorizer, access("/v1/gpu/status", "GET", x_api_key=key))
    assert (refused.kind, refused.reason, refused.metadata["scope"]) == (
        ErrorKind.PERMISSION_DENIED,
        "SCOPE_MISSING",
        "admin",
    )


async def test_an_unreachable_store_is_a_503_never_a_pass() -> None:
    _, key = new_api_key()
    refused = await refusal(Authorizer(Directory(down=True), TokenPolicy()), access(x_api_key=key))
    assert (refused.kind, refused.reason) == (ErrorKind.UNAVAILABLE, "CREDENTIAL_STORE_UNAVAILABLE")


async def test_a_token_is_trusted_only_with_jwt_authns_verified_claims() -> None:
    authorizer = Authorizer(Directory(), TokenPolicy())
    unverified = AccessRequest("POST", "/v1/generate", "", {"authorization": "Bearer a.b.c"}, None, "Jwt is expired")
    assert (await refusal(authorizer, unverified)).reason == "TOKEN_EXPIRED"
    claims = {"iss": "https://idp", "sub": "ada", "scope": "inference"}
    verified = AccessRequest("POST", "/v1/generate", "", {"authorization": "Bearer a.b.c"}, claims)
    identity = await authorizer.check(verified)
    assert identity is not None and identity.subject == "jwt:https://idp#ada"
    assert identity.limits.max_priority is Priority.HIGH


async def test_health_needs_nothing() -> None:
    health = AccessRequest("POST", "/grpc.health.v1.Health/Check", "", {"content-type": "application/grpc"})
    assert await Authorizer(Directory(), TokenPolicy()).check(health) is None


async def test_a_secret_that_does_not_match_the_kept_record_is_checked_against_a_fresh_one() -> None:
    key_id, old = new_api_key()
    new = new_secret_for(key_id)

    class Stale(Directory):
        async def find(self, key_id: str, recheck: bool = False) -> KeyRecord | None:
            return record(new) if recheck else record(old)

    identity = await Authorizer(Stale(), TokenPolicy(), clock=lambda: NOW).check(access(x_api_key=new))
    assert identity is not None and identity.subject == f"key:{key_id}"


async def test_headers_over_the_limit_are_refused_before_the_credential_is_read() -> None:
    _, key = new_api_key()
    authorizer = Authorizer(Directory(record(key)), TokenPolicy())
    padded = access(x_api_key=key, x_padding="p" * MAX_REQUEST_HEADER_BYTES)
    refused = await refusal(authorizer, padded)
    assert (refused.kind, refused.reason, http_status_of(refused)) == (
        ErrorKind.RESOURCE_EXHAUSTED, "HEADERS_TOO_LARGE", 431
    )  # fmt: skip
    # The same key with headers under the limit is let in: it is the size that was refused.
    assert await authorizer.check(access(x_api_key=key, x_padding="p" * 1024)) is not None
