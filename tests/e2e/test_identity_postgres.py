"""The whole mesh on PostgreSQL (MESHSERVE_DATABASE_URL): keys issued and checked, and the audit log, in a
real server the test starts. The same mesh trusts a second JWT issuer whose JWKS it fetches by URL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.identity_support import bearer, create_key, meshserve
from tests.e2e.test_identity import caller_of
from tests.e2e.test_identity_audit import records_appear
from tests.otlp_receiver import OtlpReceiver
from tests.ports import free_port
from tests.postgres import PostgresServer
from tests.support import write_model_config


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


CORP_ISSUER = "https://login.corp.example"
CORP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    """An identity provider's JWKS endpoint, served over HTTP on loopback by the test."""
    public = jwt.algorithms.RSAAlgorithm.to_jwk(CORP_KEY.public_key(), as_dict=True)
    body = json.dumps({"keys": [{**public, "kid": "corp-1", "alg": "RS256", "use": "sig"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def pg_mesh(
    tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver, database_url: str, jwks_url: str
) -> Iterator[Mesh]:
    directory: Path = tmp_path_factory.mktemp("pg-mesh")
    config = write_model_config(directory, context_length=512, slots=1)
    corp = {"name": "corp", "issuer": CORP_ISSUER, "audiences": ["meshserve"], "jwks_url": jwks_url}
    env = {"MESHSERVE_DATABASE_URL": database_url, "MESHSERVE_JWT_ISSUERS": json.dumps([corp])}
    with running_mesh(directory, config, traces, env) as started:
        yield started


def test_keys_and_the_audit_log_live_in_postgresql(pg_mesh: Mesh, postgres_server: PostgresServer,
                                                   database_url: str) -> None:  # fmt: skip
    database = database_url.rsplit("/", 1)[1]
    assert not (pg_mesh.state_dir / "meshserve.db").exists(), "no SQLite file beside PostgreSQL"
    key_id, key = create_key(pg_mesh, "--scopes", "inference")
    assert postgres_server.psql(f"SELECT name FROM keys WHERE key_id = '{key_id}'", database).startswith("test-")
    admins = postgres_server.psql("SELECT count(*) FROM keys WHERE name = 'development admin'", database)
    assert admins == "1", "make up's development key is in PostgreSQL too"
    reply = pg_mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=bearer(key))
    assert reply.status == 200, reply.body
    records = records_appear(pg_mesh, key_id, 1)
    assert records[0]["trace_id"] == reply.trace_id
    assert int(postgres_server.psql(f"SELECT count(*) FROM audit WHERE subject = 'key:{key_id}'", database)) >= 1
    assert meshserve(pg_mesh, "keys", "list").returncode == 0


def test_a_token_from_an_issuer_trusted_by_url_is_accepted(pg_mesh: Mesh) -> None:
    now = int(time.time())
    claims = {"iss": CORP_ISSUER, "aud": "meshserve", "sub": "bob", "roles": ["developer"], "iat": now,
              "exp": now + 300}  # fmt: skip
    token = jwt.encode(claims, CORP_KEY, algorithm="RS256", headers={"kid": "corp-1"})
    reply = pg_mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=bearer(token))
    assert reply.status == 200, reply.body
    assert caller_of(pg_mesh, reply.trace_id) == f"jwt:{CORP_ISSUER}#bob"
    assert pg_mesh.get_json("/v1/gpu/status", headers=bearer(token))[0] == 403, "developer has no admin scope"
