"""API keys: issued, looked up by id, revoked, rotated. Each call is one transaction."""

from __future__ import annotations

import builtins
import dataclasses
from typing import Any

from sqlalchemy import exc, select, update
from sqlalchemy.engine import Row

from services.store.connections import Connections
from services.store.records import KeyRecord
from services.store.schema import keys


class KeyStore:
    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def add(self, record: KeyRecord) -> None:
        """Stores a new key; ValueError if its key_id is taken."""
        row = _to_row(record)
        try:
            async with self._connections.transaction() as connection:
                await connection.execute(keys.insert().values(row))
        except exc.IntegrityError:
            if await self.get(record.key_id) is not None:
                raise ValueError(f"a key with id {record.key_id!r} exists already") from None
            raise

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self._connections.transaction() as connection:
            result = await connection.execute(select(keys).where(keys.c.key_id == key_id))
            row = result.first()
        return None if row is None else _to_record(row)

    async def list(self, include_revoked: bool = False) -> list[KeyRecord]:
        query = select(keys).order_by(keys.c.created_at, keys.c.key_id)
        if not include_revoked:
            query = query.where(keys.c.revoked_at.is_(None))
        return await self._records(query)

    async def revoke(self, key_id: str, at: float) -> bool:
        """False if there is no such key, or it was revoked already (its first revocation time stands)."""
        statement = (
            update(keys)
            .where(keys.c.key_id == key_id, keys.c.revoked_at.is_(None))
            .values(revoked_at=at, updated_at=at)
        )
        return await self._updated_one(statement)

    async def rotate(self, key_id: str, new_secret_hash: str, previous_valid_until: float | None, at: float) -> bool:
        """Replaces the secret. With previous_valid_until, the old secret keeps working until then (a grace
        period for clients to switch); with None it stops at once. False if no such unrevoked key."""
        # In an UPDATE, every right-hand side reads the row as it was: this keeps the old secret_hash.
        previous_secret_hash = None if previous_valid_until is None else keys.c.secret_hash
        statement = (
            update(keys)
            .where(keys.c.key_id == key_id, keys.c.revoked_at.is_(None))
            .values(
                secret_hash=new_secret_hash,
                previous_secret_hash=previous_secret_hash,
                previous_valid_until=previous_valid_until,
                updated_at=at,
            )
        )
        return await self._updated_one(statement)

    # builtins.list: inside this class, `list` is the method above.
    async def _records(self, query: Any) -> builtins.list[KeyRecord]:
        async with self._connections.transaction() as connection:
            rows = (await connection.execute(query)).all()
        return [_to_record(row) for row in rows]

    async def _updated_one(self, statement: Any) -> bool:
        async with self._connections.transaction() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1


def _to_row(record: KeyRecord) -> dict[str, Any]:
    for scope in record.scopes:
        if not scope or scope.split() != [scope]:
            raise ValueError(f"a scope is one word without spaces, not {scope!r}")
    return {**dataclasses.asdict(record), "scopes": " ".join(record.scopes)}


def _to_record(row: Row[Any]) -> KeyRecord:
    values = dict(row._mapping)
    return KeyRecord(**{**values, "scopes": tuple(values["scopes"].split())})
