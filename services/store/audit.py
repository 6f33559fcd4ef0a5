"""The audit log: one row per request at the edge, appended in batches, read by time, pruned by age."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import delete, select

from services.store.connections import Connections
from services.store.records import AuditRecord
from services.store.schema import audit

# Every column but the surrogate id, in AuditRecord's order.
_RECORD_COLUMNS = [audit.c[field.name] for field in dataclasses.fields(AuditRecord)]


class AuditStore:
    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def append(self, records: Sequence[AuditRecord]) -> None:
        """All the records in one transaction (one executemany), or none of them."""
        if not records:
            return
        rows = [dataclasses.asdict(record) for record in records]
        async with self._connections.transaction() as connection:
            await connection.execute(audit.insert(), rows)

    async def query(self, since: float, subject: str | None = None, limit: int = 1000) -> list[AuditRecord]:
        """Records at or after `since`, oldest first (records of one instant in the order appended)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        query = select(*_RECORD_COLUMNS).where(audit.c.at >= since).order_by(audit.c.at, audit.c.id).limit(limit)
        if subject is not None:
            query = query.where(audit.c.subject == subject)
        async with self._connections.transaction() as connection:
            rows = (await connection.execute(query)).all()
        return [AuditRecord(**row._mapping) for row in rows]

    async def delete_before(self, at: float) -> int:
        """Deletes the records older than `at`; returns how many there were."""
        async with self._connections.transaction() as connection:
            result = await connection.execute(delete(audit).where(audit.c.at < at))
        return result.rowcount
