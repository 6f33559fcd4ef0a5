"""Carries out the unloads the scheduler's core decides (idle past keep_alive, or evicted to make room).

Each unload is an UnloadModel call to the endpoint; the core hears back either way, so an endpoint that
refused (a request reached it first) simply stays resident.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.model import Unload
from services.shared.channels import open_channel
from services.shared.tls import TlsFiles

log = logging.getLogger(__name__)

_UNLOAD_TIMEOUT_SECONDS = 30.0


class ResidencyKeeper:
    def __init__(self, broker: SlotBroker, address_of: Callable[[str], str | None], tls: TlsFiles | None) -> None:
        self._broker = broker
        self._address_of = address_of
        self._tls = tls
        self._running: set[asyncio.Task[None]] = set()

    def unload(self, unload: Unload) -> None:
        task = asyncio.get_running_loop().create_task(self._unload(unload))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _unload(self, unload: Unload) -> None:
        endpoint_id = unload.endpoint_id
        address = self._address_of(endpoint_id)
        if address is None:
            return  # it left the mesh, and its memory with it
        log.info("unloading %s (%s)", endpoint_id, unload.reason)
        try:
            async with open_channel(address, self._tls, peer="inference") as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                await stub.UnloadModel(inference_pb2.UnloadModelRequest(), timeout=_UNLOAD_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            log.info("%s stays loaded: %s %s", endpoint_id, error.code().name, error.details())
            self._broker.unload_failed(endpoint_id)
            return
        self._broker.model_unloaded(endpoint_id)
