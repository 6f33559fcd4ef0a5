"""An attack corpus at the door: every case is answered 401 or 403 by the edge, on every surface, and none
reaches the gateway's Generate (its own metrics say so)."""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import httpx
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.shared.status_details import details_of
from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import (
    bearer,
    create_key,
    foreign_token,
    generate_calls,
    hs256_with_the_public_key,
    meshserve,
    tampered,
    token,
    unsigned_token,
)
from tests.e2e.test_mesh_scheduling import wait_for

FORGED_IDENTITY = json.dumps(
    {"sub": "key:kadmin", "scopes": ["admin", "inference"], "rpm": None, "tpm": None, "concurrent": None,
     "max_priority": "CRITICAL", "surface": "rest", "route": "x"}
)  # fmt: skip


@dataclass(frozen=True)
class Keys:
    inference: str
    jobs_only: str
    revoked: str
    expired: str


@pytest.fixture(scope="module")
def keys(mesh: Mesh) -> Keys:
    _, inference = create_key(mesh, "--scopes", "inference")
    _, jobs_only = create_key(mesh, "--scopes", "jobs")
    revoked_id, revoked = create_key(mesh, "--scopes", "inference")
    assert meshserve(mesh, "keys", "revoke", revoked_id).returncode == 0
    _, expired = create_key(mesh, "--scopes", "inference", "--expires", "1s")
    return Keys(inference, jobs_only, revoked, expired)


@dataclass(frozen=True)
class Attack:
    name: str
    headers: Callable[[Mesh, Keys], dict[str, str]]
    status: int
    # Why the edge refused it, as google.rpc.ErrorInfo's reason (and, lower-cased, OpenAI's `code`).
    reason: str
    query: Callable[[Keys], str] = lambda keys: ""


def wrong_secret(keys: Keys) -> str:
    key_id = keys.inference.split("_")[1]
    return f"msk_{key_id}_{secrets.token_urlsafe(32)}"


def none(mesh: Mesh, keys: Keys) -> dict[str, str]:
    return {}


ATTACKS = [
    Attack("no credential", none, 401, "CREDENTIAL_MISSING"),
    Attack("basic auth", lambda mesh, keys: {"authorization": "Basic dXNlcjpwYXNz"}, 401, "CREDENTIAL_MALFORMED"),
    Attack("bearer without a credential", lambda mesh, keys: {"authorization": "Bearer"}, 401, "CREDENTIAL_MALFORMED"),
    Attack("bearer with spaces", lambda mesh, keys: {"authorization": "Bearer msk_a b"}, 401, "CREDENTIAL_MALFORMED"),
    Attack("a made-up key", lambda mesh, keys: bearer("msk_k000000000000_" + "A" * 43), 401, "KEY_INVALID"),
    Attack("a real key id with a wrong secret", lambda mesh, keys: bearer(wrong_secret(keys)), 401, "KEY_INVALID"),
    Attack("a wrong key in x-api-key", lambda mesh, keys: {"x-api-key": wrong_secret(keys)}, 401, "KEY_INVALID"),
    Attack("neither a key nor a token", lambda mesh, keys: bearer("hunter2"), 401, "CREDENTIAL_MALFORMED"),
    Attack("a revoked key", lambda mesh, keys: bearer(keys.revoked), 401, "KEY_REVOKED"),
    Attack("an expired key", lambda mesh, keys: bearer(keys.expired), 401, "KEY_EXPIRED"),
    Attack("a key for another scope", lambda mesh, keys: bearer(keys.jobs_only), 403, "SCOPE_MISSING"),
    Attack(
        "two different credentials",
        lambda mesh, keys: {**bearer(keys.inference), "x-api-key": keys.jobs_only},
        401,
        "CREDENTIAL_AMBIGUOUS",
    ),
    # An unsigned token is no JWS at all; no trusted key is an HMAC key, so none matches an HS256 token.
    Attack("a token with alg none", lambda mesh, keys: bearer(unsigned_token()), 401, "TOKEN_MALFORMED"),
    Attack(
        "HS256 signed with the public key",
        lambda mesh, keys: bearer(hs256_with_the_public_key(mesh)),
        401,
        "TOKEN_KEY_UNKNOWN",
    ),
    Attack(
        "a wrong issuer",
        lambda mesh, keys: bearer(token(mesh, iss="https://evil.example")),
        401,
        "TOKEN_ISSUER_NOT_TRUSTED",
    ),
    Attack(
        "a wrong audience",
        lambda mesh, keys: bearer(token(mesh, aud="someone-else")),
        401,
        "TOKEN_AUDIENCE_NOT_ALLOWED",
    ),
    Attack("an expired token", lambda mesh, keys: bearer(token(mesh, exp=1, iat=0, nbf=0)), 401, "TOKEN_EXPIRED"),
    Attack("a token not valid yet", lambda mesh, keys: bearer(token(mesh, nbf=2**31 - 1)), 401, "TOKEN_NOT_YET_VALID"),
    Attack("an unknown kid", lambda mesh, keys: bearer(token(mesh, kid="nobody-knows")), 401, "TOKEN_KEY_UNKNOWN"),
    Attack("a token signed by a stranger", lambda mesh, keys: bearer(foreign_token()), 401, "TOKEN_SIGNATURE_INVALID"),
    Attack("a tampered payload", lambda mesh, keys: bearer(tampered(mesh)), 401, "TOKEN_SIGNATURE_INVALID"),
    Attack(
        "an oversized token", lambda mesh, keys: bearer(token(mesh, padding="x" * 12_000)), 401, "CREDENTIAL_MALFORMED"
    ),
    Attack("a token without the scope", lambda mesh, keys: bearer(token(mesh, scope="jobs")), 403, "SCOPE_MISSING"),
    # A real, valid key: the query string is no place for one, and it is not taken from there.
    Attack("a key in the query string", none, 401, "CREDENTIAL_IN_QUERY", lambda keys: f"?api_key={keys.inference}"),
    Attack("an injected caller", lambda mesh, keys: {"x-meshserve-caller": "key:kadmin"}, 401, "CREDENTIAL_MISSING"),
    Attack(
        "a forged identity header",
        lambda mesh, keys: {"x-meshserve-identity": FORGED_IDENTITY},
        401,
        "CREDENTIAL_MISSING",
    ),
]


def listeners(mesh: Mesh) -> dict[str, tuple[str, Callable[[], grpc.Channel], httpx.Client]]:
    """Where an attacker reaches the edge: the loopback listener, or the TLS one bound to every interface."""
    ca = mesh.state_dir / "certs" / "ca.pem"
    tls, verify = grpc.ssl_channel_credentials(ca.read_bytes()), ssl.create_default_context(cafile=str(ca))
    return {
        "plain": (mesh.http, lambda: grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}"), httpx.Client()),
        "tls": (f"https://localhost:{mesh.port('edge_https')}",
                lambda: grpc.secure_channel(f"localhost:{mesh.port('edge_https')}", tls), httpx.Client(verify=verify)),
    }  # fmt: skip


def rest(base: str, client: httpx.Client, mesh: Mesh, attack: Attack, keys: Keys) -> httpx.Response:
    body = {"prompt": "Hi", "max_tokens": 2}
    url = f"{base}/v1/generate{attack.query(keys)}"
    return client.post(url, json=body, headers=attack.headers(mesh, keys), timeout=30)


def openai_rest(base: str, client: httpx.Client, mesh: Mesh, attack: Attack, keys: Keys) -> httpx.Response:
    body = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    url = f"{base}/v1/chat/completions{attack.query(keys)}"
    return client.post(url, json=body, headers=attack.headers(mesh, keys), timeout=30)


def grpc_call(channel: grpc.Channel, mesh: Mesh, attack: Attack, keys: Keys) -> grpc.RpcError:
    with channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        metadata = tuple(attack.headers(mesh, keys).items())
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=2), timeout=30, metadata=metadata))
    return refused.value


def test_the_corpus_is_big_enough() -> None:
    assert len(ATTACKS) >= 20 and len({attack.name for attack in ATTACKS}) == len(ATTACKS)


def expired(mesh: Mesh, keys: Keys) -> bool:
    return mesh.get_json("/v1/mesh/models", headers=bearer(keys.expired))[0] == 401


@pytest.mark.parametrize("listener", ["plain", "tls"])
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_each_attack_is_refused_on_every_surface_before_the_gateway(
    mesh: Mesh, keys: Keys, attack: Attack, listener: str
) -> None:
    wait_for(lambda: expired(mesh, keys), 15.0, "the one-second key expiring")
    base, channel, client = listeners(mesh)[listener]
    before = generate_calls(mesh)

    with client:
        native = rest(base, client, mesh, attack, keys)
        assert native.status_code == attack.status, native.text
        status = native.json()
        assert status["code"] == (16 if attack.status == 401 else 7)
        assert status["details"][0]["reason"] == attack.reason, status
        if attack.status == 401:
            assert native.headers["www-authenticate"].startswith('Bearer realm="meshserve"')

        openai = openai_rest(base, client, mesh, attack, keys)
    assert openai.status_code == attack.status, openai.text
    error = openai.json()["error"]
    assert error["type"] == ("authentication_error" if attack.status == 401 else "permission_error")
    assert error["code"] == attack.reason.lower() and error["message"], error

    refused = grpc_call(channel(), mesh, attack, keys)
    expected = grpc.StatusCode.UNAUTHENTICATED if attack.status == 401 else grpc.StatusCode.PERMISSION_DENIED
    assert refused.code() == expected, refused.details()
    # gRPC has no query string: there, that attack is a call without a credential.
    assert details_of(refused).reason == ("CREDENTIAL_MISSING" if attack.query(keys) else attack.reason)

    assert generate_calls(mesh) == before, "an attack reached the gateway's Generate"
