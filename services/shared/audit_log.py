"""The audit log's writer: records are queued in memory and written in batches, off the request path.

A request only appends to a bounded queue; one task writes what has queued every quarter second (or sooner
when a batch fills). A clean shutdown writes everything queued. A crash loses at most what was queued
since the last write, under a second's worth. While the store is down, records wait in the queue and
are written once it is back; past `max_pending` the newest are dropped, counted and logged, never the
request itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter, Gauge

from services.store.errors import StoreUnavailable
from services.store.records import AuditRecord

log = logging.getLogger("services.audit")

AUDIT_WRITTEN = Counter("meshserve_audit_records_written_total", "Audit records written to the store.")
AUDIT_DROPPED = Counter("meshserve_audit_records_dropped_total", "Audit records dropped: the queue was full.")
AUDIT_PENDING = Gauge("meshserve_audit_records_pending", "Audit records waiting to be written.")


class AuditAppender(Protocol):
    async def append(self, records: Sequence[AuditRecord]) -> None: ...


class AuditLog:
    def __init__(
        self,
        store: AuditAppender,
        max_batch: int = 500,
        flush_every_seconds: float = 0.25,
        max_pending: int = 50_000,
    ) -> None:
        self._store = store
        self._max_batch, self._flush_every, self._max_pending = max_batch, flush_every_seconds, max_pending
        self._pending: deque[AuditRecord] = deque()
        self._batch_full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        AUDIT_PENDING.set_function(lambda: len(self._pending))

    def record(self, record: AuditRecord) -> None:
        """Queues one record; never waits."""
        if len(self._pending) >= self._max_pending:
            AUDIT_DROPPED.inc()
            log.error("audit queue full (%d records): dropped the record of %s", self._max_pending, record.route)
            return
        self._pending.append(record)
        if len(self._pending) >= self._max_batch:
            self._batch_full.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever(), name="audit-writer")

    async def close(self) -> None:
        """Stops the writer and writes everything still queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._pending and await self._write_batch():
            pass
        if self._pending:
            log.error("audit log closed with %d records it could not write", len(self._pending))

    async def _write_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._batch_full.wait(), self._flush_every)
            except TimeoutError:
                pass
            self._batch_full.clear()
            while self._pending and await self._write_batch() and len(self._pending) >= self._max_batch:
                pass

    async def _write_batch(self) -> bool:
        """Writes the oldest batch; False (records kept) when the store refuses."""
        batch = [self._pending[index] for index in range(min(self._max_batch, len(self._pending)))]
        try:
            await self._store.append(batch)
        except StoreUnavailable as error:
            log.warning("audit records not written yet (%d waiting): %s", len(self._pending), error)
            return False
        for _ in batch:
            self._pending.popleft()
        AUDIT_WRITTEN.inc(len(batch))
        return True
