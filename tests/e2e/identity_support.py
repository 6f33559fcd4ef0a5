"""Credentials for the e2e tests of identity at the edge: keys issued with `meshserve keys`, tokens signed
with the development issuer's keys (or with keys the edge does not trust), and the gateway's Generate count."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.identity.dev_issuer import DEV_AUDIENCE, DEV_ISSUER
from tests.e2e.conftest import MESHSERVE, Mesh
from tests.e2e.test_mesh_metrics import metrics
from tests.support import REPO_ROOT

GENERATE = "/meshserve.gateway.v1.GatewayService/Generate"


def meshserve(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    """The `meshserve` command, against the mesh's own state directory and store."""
    return subprocess.run([*MESHSERVE, *args], cwd=REPO_ROOT, env=mesh.env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def create_key(mesh: Mesh, *options: str) -> tuple[str, str]:
    """Issues a key with `meshserve keys create`; returns (key id, key)."""
    name = f"test-{time.monotonic_ns()}"
    done = meshserve(mesh, "keys", "create", "--name", name, *options)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    return key.split("_")[1], key


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def dev_key(mesh: Mesh, algorithm: str = "RS256") -> Any:
    name = "dev-rs256" if algorithm == "RS256" else "dev-es256"
    return serialization.load_pem_private_key((mesh.state_dir / "jwt" / f"{name}.pem").read_bytes(), password=None)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "tester", "scope": "inference", "iat": now, "nbf": now,
            "exp": now + 600}  # fmt: skip
    return {**base, **overrides}


def token(mesh: Mesh, algorithm: str = "RS256", kid: str | None = None, **overrides: Any) -> str:
    kid = kid or ("dev-rs256" if algorithm == "RS256" else "dev-es256")
    return jwt.encode(claims(**overrides), dev_key(mesh, algorithm), algorithm=algorithm, headers={"kid": kid})


def foreign_token(**overrides: Any) -> str:
    """Signed by a key the edge has never seen, naming the development key's id."""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims(**overrides), stranger, algorithm="RS256", headers={"kid": "dev-rs256"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token() -> str:
    """alg: none, the oldest trick: a token with no signature at all."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "dev-rs256"}).encode())
    return f"{header}.{_b64(json.dumps(claims(scope='inference admin')).encode())}."


def hs256_with_the_public_key(mesh: Mesh) -> str:
    """Signed with HMAC, using the issuer's public key as the secret: the algorithm-confusion attack."""
    public = (
        dev_key(mesh)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "dev-rs256"}).encode())
    payload = _b64(json.dumps(claims()).encode())
    # By hand: PyJWT itself refuses to sign HS256 with a PEM public key, for this very reason.
    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def tampered(mesh: Mesh) -> str:
    """A valid token whose payload was changed afterwards, to grant itself admin."""
    header, _, signature = token(mesh).split(".")
    return f"{header}.{_b64(json.dumps(claims(scope='inference admin')).encode())}.{signature}"


def generate_calls(mesh: Mesh) -> float:
    """Generate calls the gateway has started, from its own metrics."""
    return sum(
        value for (name, labels), value in metrics(mesh, "gateway_metrics").items()
        if name == "meshserve_rpc_requests_total" and ("method", GENERATE) in labels
    )  # fmt: skip
