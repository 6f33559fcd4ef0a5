"""The development issuer: signing keys that `make up` creates and the edge trusts, and the tokens
`meshserve token` mints with them, so that JWTs can be tried without an identity provider.

Its keys live in the state directory (mode 0600); its JWKS beside them is what Envoy's jwt_authn reads.
A deployment trusts its own issuers instead (MESHSERVE_JWT_ISSUERS) and need not trust this one.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.identity.key_file import write_private_file

DEV_ISSUER = "https://meshserve.local/dev"
DEV_AUDIENCE = "meshserve"
# The algorithm of each key, and the key id tokens name it by.
_KEYS = {"RS256": "dev-rs256", "ES256": "dev-es256"}


@dataclass(frozen=True)
class DevIssuer:
    directory: Path

    @property
    def jwks_file(self) -> Path:
        return self.directory / "jwks.json"

    def key_file(self, algorithm: str) -> Path:
        return self.directory / f"{_KEYS[algorithm]}.pem"

    def ensure(self) -> DevIssuer:
        """Creates the signing keys and their JWKS, once; later calls keep them."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for algorithm in _KEYS:
            if not self.key_file(algorithm).exists():
                _write_private(self.key_file(algorithm), _new_key(algorithm))
        keys = [_public_jwk(self._private_key(algorithm), algorithm) for algorithm in _KEYS]
        self.jwks_file.write_text(json.dumps({"keys": keys}, indent=2))
        return self

    def mint(self, subject: str, scopes: list[str], ttl_seconds: float, algorithm: str = "RS256") -> str:
        now = int(time.time())
        claims = {
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "sub": subject,
            "scope": " ".join(scopes),
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl_seconds),
            "jti": secrets.token_hex(8),
        }
        key = self._private_key(algorithm)
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": _KEYS[algorithm]})

    def _private_key(self, algorithm: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_file(algorithm).read_bytes(), password=None)
        assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
        return key


def _new_key(algorithm: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private_file(path, pem)


def _public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, algorithm: str) -> dict:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": _KEYS[algorithm], "alg": algorithm, "use": "sig"}
