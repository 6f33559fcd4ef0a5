"""Opening the store at a service's start, waiting for it as long as it takes."""

from __future__ import annotations

import asyncio
import logging

from services.store.database import Database, open_database
from services.store.errors import StoreUnavailable

log = logging.getLogger("services.store")
_RETRY_SECONDS = 1.0


async def open_store(url: str) -> Database:
    """The open (migrated) store; a service that needs it serves nothing until then."""
    while True:
        try:
            return await open_database(url)
        except StoreUnavailable as error:
            log.warning("waiting for the store: %s", error)
            await asyncio.sleep(_RETRY_SECONDS)
