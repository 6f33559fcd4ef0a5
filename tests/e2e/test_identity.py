"""Identity at the door, on the real mesh: keys and tokens on every surface, scopes per route, the caller the
scheduler sees, and revocation and rotation within a second."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import time

import grpc
import httpx
import openai
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.identity.dev_issuer import DEV_ISSUER
from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import bearer, create_key, meshserve, token
from tests.e2e.surfaces import SURFACES, ask

CHAT = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def grpc_generate(mesh: Mesh, credential: str) -> list[pb.GenerateResponse]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = pb.GenerateRequest(prompt="Hi", max_tokens=2)
        return list(stub.Generate(request, timeout=60, metadata=tuple(bearer(credential).items())))


def sdk(mesh: Mesh, credential: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.http}/v1", api_key=credential, max_retries=0, timeout=60)


def caller_of(mesh: Mesh, trace_id: str) -> str:
    """The caller the scheduler granted the request's slot to, from its own log."""
    for line in mesh.log("scheduler").splitlines():
        record = json.loads(line)
        if record.get("trace_id") == trace_id and record["message"].startswith("granted "):
            return record["message"].split(" to ")[1].split(" at ")[0]
    raise AssertionError(f"no grant for trace {trace_id}")


def models_status(mesh: Mesh, credential: str) -> int:
    return mesh.get_json("/v1/mesh/models", headers=bearer(credential))[0]


def answers_after(mesh: Mesh, credential: str, since: float, settle_seconds: float = 1.0) -> list[int]:
    """The statuses of requests started `settle_seconds` or more after `since`, polling until there is one.

    A request's start, not its end, is what the bound is about: a slow answer to an early request says
    nothing, and every request started after the bound must already see the change.
    """
    late: list[int] = []
    while not late:
        started = time.monotonic()
        status = models_status(mesh, credential)
        if started - since >= settle_seconds:
            late.append(status)
        time.sleep(0.02)  # a poll's pace, not an order: every request is checked on its own
    return late


def test_the_development_key_file_is_private_and_the_store_keeps_only_hashes(mesh: Mesh) -> None:
    key_file = mesh.state_dir / "api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = mesh.api_key
    with sqlite3.connect(mesh.state_dir / "meshserve.db") as database:
        rows = database.execute("SELECT * FROM keys").fetchall()
    stored = json.dumps(rows)
    assert key not in stored and key.split("_")[2] not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_development_token_works_on_every_surface(mesh: Mesh, algorithm: str) -> None:
    minted = meshserve(mesh, "token", "--scopes", "inference", "--ttl", "10m", "--alg", algorithm, "--subject", "ada")
    assert minted.returncode == 0, minted.stderr
    credential = minted.stdout.strip()
    reply = mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=bearer(credential))
    assert reply.status == 200 and reply.events[-1]["usage"]["output_tokens"] == 2
    assert caller_of(mesh, reply.trace_id) == f"jwt:{DEV_ISSUER}#ada"
    assert sdk(mesh, credential).chat.completions.create(**CHAT).usage.completion_tokens == 2
    assert grpc_generate(mesh, credential)[-1].usage.output_tokens == 2


def test_the_caller_is_the_key_never_a_header_the_client_sets(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference")
    forged = {**bearer(key), "x-meshserve-caller": "someone-else", "x-meshserve-identity": "{}"}
    reply = mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=forged)
    assert reply.status == 200, reply.body
    assert caller_of(mesh, reply.trace_id) == f"key:{key_id}"
    # x-api-key is the other way to send a key.
    reply = mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers={"x-api-key": key})
    assert reply.status == 200 and caller_of(mesh, reply.trace_id) == f"key:{key_id}"


def test_scopes_gate_routes_on_every_surface(mesh: Mesh) -> None:
    _, inference = create_key(mesh, "--scopes", "inference")
    assert mesh.get_json("/v1/mesh/models", headers=bearer(inference))[0] == 200
    assert sdk(mesh, inference).models.list().data[0].id == "gemma-3-270m"
    status, body = mesh.get_json("/v1/gpu/status", headers=bearer(inference))
    assert status == 403 and body["details"][0]["reason"] == "SCOPE_MISSING"
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetSchedulerState(pb.GetSchedulerStateRequest(), timeout=10, metadata=tuple(bearer(inference).items()))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert mesh.get_json("/v1/gpu/status")[0] == 200, "the development key is an admin"
    reply = httpx.get(f"{mesh.http}/v1/gpu/status", headers=bearer(inference), timeout=10)
    assert 'error="insufficient_scope"' in reply.headers["www-authenticate"]


def test_only_health_is_anonymous(mesh: Mesh) -> None:
    assert httpx.get(f"{mesh.http}/healthz", timeout=10).status_code == 200
    for path in ("/v1/mesh/models", "/v1/models", "/v1/gpu/status", "/v1/scheduler/state", "/v1/nope"):
        reply = httpx.get(f"{mesh.http}{path}", timeout=10)
        assert reply.status_code == 401, path
        assert reply.headers["www-authenticate"] == 'Bearer realm="meshserve"'


def test_a_revoked_key_is_refused_within_a_second(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference")
    assert models_status(mesh, key) == 200
    assert meshserve(mesh, "keys", "revoke", key_id).returncode == 0
    assert answers_after(mesh, key, since=time.monotonic()) == [401]
    status, body = mesh.get_json("/v1/mesh/models", headers=bearer(key))
    assert body["details"][0]["reason"] == "KEY_REVOKED"
    for surface in SURFACES:
        refused = ask(mesh, surface, bearer(key))
        assert (refused.status, refused.reason) == (401, "KEY_REVOKED"), refused


def test_a_rotated_key_works_at_once_and_the_old_one_stops_within_a_second(mesh: Mesh) -> None:
    key_id, old = create_key(mesh, "--scopes", "inference")
    assert models_status(mesh, old) == 200
    rotated = meshserve(mesh, "keys", "rotate", key_id)
    assert rotated.returncode == 0, rotated.stderr
    rotated_at, new = time.monotonic(), rotated.stdout.strip()
    assert answers_after(mesh, old, since=rotated_at) == [401], "the old secret refused within a second"
    assert new != old and new.split("_")[1] == key_id
    assert models_status(mesh, new) == 200
    for surface in SURFACES:
        assert ask(mesh, surface, bearer(new)).status == 200, surface
        assert ask(mesh, surface, bearer(old)).status == 401, surface


def test_a_rotation_with_grace_keeps_the_old_secret_working(mesh: Mesh) -> None:
    key_id, old = create_key(mesh, "--scopes", "inference")
    rotated = meshserve(mesh, "keys", "rotate", key_id, "--grace", "1h")
    assert rotated.returncode == 0, rotated.stderr
    assert models_status(mesh, rotated.stdout.strip()) == 200
    assert models_status(mesh, old) == 200


def test_keys_list_shows_no_secrets(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference,jobs", "--rpm", "60", "--tpm", "20000", "--expires", "30d")
    listed = meshserve(mesh, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    records = {record["key_id"]: record for record in map(json.loads, listed.stdout.splitlines())}
    assert records[key_id]["scopes"] == ["inference", "jobs"] and records[key_id]["requests_per_minute"] == 60
    assert key not in listed.stdout and "secret_hash" not in listed.stdout


# A route of each scope, on REST and over gRPC through the edge.
ROUTE_OF_SCOPE = {"inference": "/v1/models", "jobs": "/v1/async/jobs", "admin": "/v1/gpu/status"}


def grpc_status(mesh: Mesh, credential: str, admin: bool) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub, metadata = gateway_pb2_grpc.GatewayServiceStub(channel), tuple(bearer(credential).items())
        try:
            if admin:
                stub.GetSchedulerState(pb.GetSchedulerStateRequest(), timeout=30, metadata=metadata)
            else:
                list(stub.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=1), timeout=60, metadata=metadata))
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("claims", "granted"),
    [
        ({"roles": ["admin"]}, {"inference", "jobs", "admin"}),
        ({"roles": ["developer"]}, {"inference", "jobs"}),
        ({"roles": "inference"}, {"inference"}),
        ({"scp": ["jobs"]}, {"jobs"}),
        ({"scp": "inference admin"}, {"inference", "admin"}),
    ],
)
def test_a_tokens_roles_and_scp_grant_the_scopes_each_route_needs(mesh: Mesh, claims: dict, granted: set) -> None:
    credential = token(mesh, scope="", **claims)
    for scope, path in ROUTE_OF_SCOPE.items():
        status = mesh.get_json(path, headers=bearer(credential))[0]
        assert status == (200 if scope in granted else 403), (scope, path, status)
    for scope in ("inference", "admin"):
        expected = grpc.StatusCode.OK if scope in granted else grpc.StatusCode.PERMISSION_DENIED
        assert grpc_status(mesh, credential, admin=scope == "admin") == expected, scope
