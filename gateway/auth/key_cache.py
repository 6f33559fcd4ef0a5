"""Key records as the authorization service reads them: from the store, kept for half a second.

Half a second bounds how long a revoked or rotated key keeps working. Absent keys are kept too, so a
flood of wrong keys costs one lookup per key id per period, and the number kept is bounded. While the
store is down, a record read before stays usable for `stale_for`: keys cannot be revoked meanwhile
either, since revoking writes to the same store. A key never read before is refused with 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.store.errors import StoreUnavailable
from services.store.keys import KeyStore
from services.store.records import KeyRecord

log = logging.getLogger("gateway.auth.keys")
# A recheck within this long of the last read answers from memory: wrong secrets cannot hammer the store.
_RECHECK_AFTER_SECONDS = 0.05


@dataclass(frozen=True)
class _Entry:
    record: KeyRecord | None
    read_at: float


class CachedKeyDirectory:
    def __init__(
        self,
        store: KeyStore,
        fresh_for: float = 0.5,
        stale_for: float = 300.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._fresh_for, self._stale_for, self._max_entries = fresh_for, stale_for, max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._reads: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def find(self, key_id: str, recheck: bool = False) -> KeyRecord | None:
        """The key's record. `recheck` reads it again unless it was read a moment ago: a secret that does not
        match the kept record may be the one a rotation just issued."""
        entry = self._entries.get(key_id)
        fresh_for = min(self._fresh_for, _RECHECK_AFTER_SECONDS) if recheck else self._fresh_for
        if entry is not None and self._clock() - entry.read_at < fresh_for:
            return entry.record
        # One read per key at a time: requests that arrive meanwhile wait for it.
        pending = self._reads.get(key_id)
        if pending is None:
            pending = asyncio.ensure_future(self._read(key_id, entry))
            self._reads[key_id] = pending
            pending.add_done_callback(lambda _: self._reads.pop(key_id, None))
        return await asyncio.shield(pending)

    async def _read(self, key_id: str, previous: _Entry | None) -> KeyRecord | None:
        try:
            record = await self._store.get(key_id)
        except StoreUnavailable:
            if previous is not None and self._clock() - previous.read_at < self._stale_for:
                log.warning("the key store is unavailable; using key %s as read %.0fs ago", key_id,
                            self._clock() - previous.read_at)  # fmt: skip
                return previous.record
            raise
        self._remember(key_id, _Entry(record, self._clock()))
        return record

    def _remember(self, key_id: str, entry: _Entry) -> None:
        self._entries[key_id] = entry
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
