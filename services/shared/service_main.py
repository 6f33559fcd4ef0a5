"""How every service process starts: JSON logs, tracing, uvloop, and the traces flushed on the way out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import uvloop

from services.shared.service_settings import ServiceSettings
from telemetry.logs import configure_logging
from telemetry.tracing import configure_tracing

Settings = TypeVar("Settings", bound=ServiceSettings)


def run_service(name: str, settings: Settings, serve: Callable[[Settings], Awaitable[int]]) -> NoReturn:
    configure_logging(name, settings.log_level)
    stop_tracing = configure_tracing(name, settings.tracing())
    try:
        # uvloop: a faster event loop under grpc.aio, which spends most of a service's own CPU.
        raise SystemExit(uvloop.run(serve(settings)))
    finally:
        # Flushes the spans still batched, so the last requests before a stop are not lost.
        stop_tracing()
