"""API keys: how one is made, how it is named, and how it is checked against its stored hash.

A key is `msk_<key id>_<secret>`. The key id is public (lists, audit records, revocation name it); the
secret is 32 random bytes. Only the SHA-256 of the whole key is stored: the secret has 256 bits of
entropy, so a slow password hash would add latency to every request and no safety.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from services.store.records import KeyRecord

KEY_PREFIX = "msk_"
_KEY_ID_BYTES = 6
_SECRET_BYTES = 32
_KEY_PATTERN = re.compile(r"^msk_(k[0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def new_api_key() -> tuple[str, str]:
    """A fresh (key id, key)."""
    key_id = "k" + secrets.token_hex(_KEY_ID_BYTES)
    return key_id, new_secret_for(key_id)


def new_secret_for(key_id: str) -> str:
    """Another key with the same id, as a rotation hands out."""
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def key_id_of(key: str) -> str | None:
    """The key id a well-formed key names; None for anything else."""
    match = _KEY_PATTERN.match(key)
    return match.group(1) if match else None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def secret_matches(record: KeyRecord, key: str, now: float) -> bool:
    """Whether the key is this record's current secret, or its previous one within a rotation's grace."""
    presented = hash_key(key)
    if hmac.compare_digest(presented, record.secret_hash):
        return True
    previous, until = record.previous_secret_hash, record.previous_valid_until
    return previous is not None and until is not None and now < until and hmac.compare_digest(presented, previous)
