"""The admin API on the real mesh: keys issued, listed, rotated and revoked, and the audit log read, over
REST and gRPC through the edge, for the admin scope only."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
from meshserve.identity.v1 import identity_pb2 as pb
from meshserve.identity.v1 import identity_pb2_grpc

from services.shared.status_details import details_of
from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import bearer, create_key
from tests.e2e.test_identity import answers_after, models_status
from tests.e2e.test_identity_audit import records_appear


def admin(
    mesh: Mesh, method: str, path: str, body: dict | None = None, credential: str | None = None
) -> httpx.Response:
    headers = bearer(credential) if credential else mesh.auth
    return httpx.request(method, f"{mesh.http}{path}", json=body, headers=headers, timeout=30)


def test_keys_are_issued_listed_rotated_and_revoked_over_rest(mesh: Mesh) -> None:
    created = admin(mesh, "POST", "/v1/admin/keys",
                    {"name": "from-rest", "scopes": ["inference"], "requests_per_minute": 50})  # fmt: skip
    assert created.status_code == 200, created.text
    key, key_id = created.json()["secret"], created.json()["api_key"]["key_id"]
    assert models_status(mesh, key) == 200
    listed = admin(mesh, "GET", "/v1/admin/keys").json()["keys"]
    entry = next(item for item in listed if item["key_id"] == key_id)
    assert entry["requests_per_minute"] == 50 and entry["max_priority"] == "PRIORITY_NORMAL"
    assert key not in admin(mesh, "GET", "/v1/admin/keys").text

    rotated = admin(mesh, "POST", f"/v1/admin/keys/{key_id}:rotate", {})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert models_status(mesh, new) == 200

    revoked = admin(mesh, "POST", f"/v1/admin/keys/{key_id}:revoke", {})
    revoked_at = time.monotonic()
    assert revoked.status_code == 200 and revoked.json()["api_key"]["revoke_time"]
    assert answers_after(mesh, new, since=revoked_at) == [401]


def test_the_audit_log_is_read_over_rest(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference")
    assert mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=bearer(key)).status == 200
    records_appear(mesh, key_id, 1)
    reply = admin(mesh, "GET", f"/v1/admin/audit?subject={key_id}&since_seconds=600")
    assert reply.status_code == 200, reply.text
    (record,) = reply.json()["records"]
    assert record["subject"] == f"key:{key_id}" and record["route"] == "POST /v1/generate" and record["status"] == 200


def test_the_admin_api_needs_the_admin_scope_and_refuses_bad_input_cleanly(mesh: Mesh) -> None:
    _, inference = create_key(mesh, "--scopes", "inference")
    refused = admin(mesh, "GET", "/v1/admin/keys", credential=inference)
    assert refused.status_code == 403 and refused.json()["details"][0]["reason"] == "SCOPE_MISSING"
    bad = admin(mesh, "POST", "/v1/admin/keys", {"name": "x", "scopes": ["superuser"]})
    assert bad.status_code == 400 and bad.json()["details"][0]["reason"] == "INVALID_KEY_TERMS"
    unknown = admin(mesh, "POST", "/v1/admin/keys/k000000000000:revoke", {})
    assert unknown.status_code == 404 and unknown.json()["details"][0]["reason"] == "UNKNOWN_KEY"
    wrong_method = admin(mesh, "DELETE", "/v1/admin/keys")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, POST"


def test_the_admin_api_is_served_over_grpc_through_the_edge(mesh: Mesh) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        created = stub.CreateKey(pb.CreateKeyRequest(name="from-grpc", scopes=["jobs"]), timeout=10,
                                 metadata=mesh.grpc_auth)  # fmt: skip
        listed = stub.ListKeys(pb.ListKeysRequest(), timeout=10, metadata=mesh.grpc_auth)
        assert created.api_key.key_id in {key.key_id for key in listed.keys}
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListKeys(pb.ListKeysRequest(), timeout=10, metadata=tuple(bearer(created.secret).items()))
    assert details_of(refused.value).code == grpc.StatusCode.PERMISSION_DENIED
