"""Issuing, rotating and revoking API keys: what `meshserve keys` and the launcher's development key do."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from services.identity.api_keys import hash_key, key_id_of, new_api_key, new_secret_for, secret_matches
from services.identity.key_file import read_key_file, write_key_file
from services.shared.domain import Priority
from services.shared.identity import Scope
from services.store.keys import KeyStore
from services.store.records import KeyRecord


@dataclass(frozen=True)
class KeyTerms:
    """What a key grants."""

    name: str
    scopes: tuple[Scope, ...]
    max_priority: Priority = Priority.NORMAL
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    expires_in_seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a key needs a name")
        if not self.scopes:
            raise ValueError("a key needs at least one scope")
        for limit in (self.requests_per_minute, self.tokens_per_minute, self.max_concurrent):
            if limit is not None and limit < 1:
                raise ValueError("limits are at least 1 (leave one out for no limit)")
        if self.expires_in_seconds is not None and self.expires_in_seconds <= 0:
            raise ValueError("a key must expire in the future")


@dataclass(frozen=True)
class IssuedKey:
    record: KeyRecord
    # The key itself: shown once, never stored.
    key: str


async def issue_key(store: KeyStore, terms: KeyTerms, now: float | None = None) -> IssuedKey:
    now = time.time() if now is None else now
    key_id, key = new_api_key()
    expires = None if terms.expires_in_seconds is None else now + terms.expires_in_seconds
    record = KeyRecord(
        key_id=key_id,
        name=terms.name,
        secret_hash=hash_key(key),
        scopes=tuple(scope.value for scope in terms.scopes),
        max_priority=terms.max_priority.name,
        requests_per_minute=terms.requests_per_minute,
        tokens_per_minute=terms.tokens_per_minute,
        max_concurrent=terms.max_concurrent,
        created_at=now,
        expires_at=expires,
        revoked_at=None,
        updated_at=now,
    )
    await store.add(record)
    return IssuedKey(record, key)


async def rotate_key(store: KeyStore, key_id: str, grace_seconds: float = 0.0, now: float | None = None) -> IssuedKey:
    """A new secret for the same key id; the old one works for `grace_seconds` more. Raises LookupError."""
    now = time.time() if now is None else now
    key = new_secret_for(key_id)
    until = now + grace_seconds if grace_seconds > 0 else None
    if not await store.rotate(key_id, hash_key(key), until, now):
        raise LookupError(f"no key {key_id} that can be rotated (unknown or revoked)")
    record = await store.get(key_id)
    assert record is not None
    return IssuedKey(record, key)


async def revoke_key(store: KeyStore, key_id: str, now: float | None = None) -> None:
    if not await store.revoke(key_id, time.time() if now is None else now):
        raise LookupError(f"no key {key_id} that can be revoked (unknown or already revoked)")


def is_usable(record: KeyRecord | None, key: str, now: float) -> bool:
    if record is None or not secret_matches(record, key, now):
        return False
    return record.revoked_at is None and (record.expires_at is None or record.expires_at > now)


async def ensure_development_key(store: KeyStore, path: Path) -> tuple[str, bool]:
    """The development admin key in `path` (mode 0600), issued when the file holds none that works.

    Returns the key and whether it was issued now.
    """
    existing = read_key_file(path)
    key_id = key_id_of(existing) if existing else None
    if existing and key_id and is_usable(await store.get(key_id), existing, time.time()):
        return existing, False
    terms = KeyTerms("development admin", tuple(Scope), Priority.CRITICAL)
    issued = await issue_key(store, terms)
    write_key_file(path, issued.key)
    return issued.key, True
