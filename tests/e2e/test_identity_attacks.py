"""An attack corpus at the door: every case is answered 401 or 403 by the edge, on every surface, and none
reaches the gateway's Generate (its own metrics say so)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import httpx
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

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
    query: str = ""


def wrong_secret(keys: Keys) -> str:
    key_id = keys.inference.split("_")[1]
    return f"msk_{key_id}_{secrets.token_urlsafe(32)}"


ATTACKS = [
    Attack("no credential", lambda mesh, keys: {}, 401),
    Attack("basic auth", lambda mesh, keys: {"authorization": "Basic dXNlcjpwYXNz"}, 401),
    Attack("bearer without a credential", lambda mesh, keys: {"authorization": "Bearer"}, 401),
    Attack("bearer with spaces", lambda mesh, keys: {"authorization": "Bearer msk_a b"}, 401),
    Attack("a made-up key", lambda mesh, keys: bearer("msk_k000000000000_" + "A" * 43), 401),
    Attack("a real key id with a wrong secret", lambda mesh, keys: bearer(wrong_secret(keys)), 401),
    Attack("a wrong key in x-api-key", lambda mesh, keys: {"x-api-key": wrong_secret(keys)}, 401),
    Attack("neither a key nor a token", lambda mesh, keys: bearer("hunter2"), 401),
    Attack("a revoked key", lambda mesh, keys: bearer(keys.revoked), 401),
    Attack("an expired key", lambda mesh, keys: bearer(keys.expired), 401),
    Attack("a key for another scope", lambda mesh, keys: bearer(keys.jobs_only), 403),
    Attack(
        "two different credentials", lambda mesh, keys: {**bearer(keys.inference), "x-api-key": keys.jobs_only}, 401
    ),
    Attack("a token with alg none", lambda mesh, keys: bearer(unsigned_token()), 401),
    Attack("HS256 signed with the public key", lambda mesh, keys: bearer(hs256_with_the_public_key(mesh)), 401),
    Attack("a wrong issuer", lambda mesh, keys: bearer(token(mesh, iss="https://evil.example")), 401),
    Attack("a wrong audience", lambda mesh, keys: bearer(token(mesh, aud="someone-else")), 401),
    Attack("an expired token", lambda mesh, keys: bearer(token(mesh, exp=1, iat=0, nbf=0)), 401),
    Attack("a token not valid yet", lambda mesh, keys: bearer(token(mesh, nbf=2**31 - 1)), 401),
    Attack("an unknown kid", lambda mesh, keys: bearer(token(mesh, kid="nobody-knows")), 401),
    Attack("a token signed by a stranger", lambda mesh, keys: bearer(foreign_token()), 401),
    Attack("a tampered payload", lambda mesh, keys: bearer(tampered(mesh)), 401),
    Attack("an oversized token", lambda mesh, keys: bearer(token(mesh, padding="x" * 12_000)), 401),
    Attack("a token without the scope", lambda mesh, keys: bearer(token(mesh, scope="jobs")), 403),
    Attack("a key in the query string", lambda mesh, keys: {}, 401, query=f"?api_key={'k' * 8}"),
    Attack("an injected caller", lambda mesh, keys: {"x-meshserve-caller": "key:kadmin"}, 401),
    Attack("a forged identity header", lambda mesh, keys: {"x-meshserve-identity": FORGED_IDENTITY}, 401),
]


def rest(mesh: Mesh, attack: Attack, keys: Keys) -> httpx.Response:
    body = {"prompt": "Hi", "max_tokens": 2}
    return httpx.post(
        f"{mesh.http}/v1/generate{attack.query}", json=body, headers=attack.headers(mesh, keys), timeout=30
    )


def openai_rest(mesh: Mesh, attack: Attack, keys: Keys) -> httpx.Response:
    body = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    url = f"{mesh.http}/v1/chat/completions{attack.query}"
    return httpx.post(url, json=body, headers=attack.headers(mesh, keys), timeout=30)


def grpc_call(mesh: Mesh, attack: Attack, keys: Keys) -> grpc.RpcError:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        metadata = tuple(attack.headers(mesh, keys).items())
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=2), timeout=30, metadata=metadata))
    return refused.value


def test_the_corpus_is_big_enough() -> None:
    assert len(ATTACKS) >= 20 and len({attack.name for attack in ATTACKS}) == len(ATTACKS)


def expired(mesh: Mesh, keys: Keys) -> bool:
    return mesh.get_json("/v1/mesh/models", headers=bearer(keys.expired))[0] == 401


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_each_attack_is_refused_on_every_surface_before_the_gateway(mesh: Mesh, keys: Keys, attack: Attack) -> None:
    wait_for(lambda: expired(mesh, keys), 15.0, "the one-second key expiring")
    before = generate_calls(mesh)

    native = rest(mesh, attack, keys)
    assert native.status_code == attack.status, native.text
    status = native.json()
    assert status["code"] == (16 if attack.status == 401 else 7) and status["details"][0]["reason"]
    if attack.status == 401:
        assert native.headers["www-authenticate"].startswith('Bearer realm="meshserve"')

    openai = openai_rest(mesh, attack, keys)
    assert openai.status_code == attack.status, openai.text
    error = openai.json()["error"]
    assert error["type"] == ("authentication_error" if attack.status == 401 else "permission_error")
    assert error["code"] and error["message"]

    refused = grpc_call(mesh, attack, keys)
    expected = grpc.StatusCode.UNAUTHENTICATED if attack.status == 401 else grpc.StatusCode.PERMISSION_DENIED
    assert refused.code() == expected, refused.details()

    assert generate_calls(mesh) == before, "an attack reached the gateway's Generate"
