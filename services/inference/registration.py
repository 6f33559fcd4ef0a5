"""Keeps this endpoint registered with the scheduler, from whichever node it runs on.

It registers its model, address, node and device, then beats at the interval the scheduler answers with,
saying how many requests it runs (so that a scheduler that restarted counts work it did not grant). When
the stream breaks, or the scheduler says nothing for three intervals (restarting, or cut off), it
registers again, on a fresh channel, as soon as the scheduler answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from meshserve.scheduler.v1 import scheduler_pb2 as pb
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from services.shared.channels import open_channel
from services.shared.liveness import SILENT_AFTER_INTERVALS
from services.shared.tls import TlsFiles

log = logging.getLogger(__name__)

_RETRY_SECONDS = 0.25
# Until the scheduler names its interval, and how long a first answer may take.
_FIRST_ANSWER_SECONDS = 3.0


@dataclass(frozen=True)
class Registration:
    model: str
    address: str
    node_name: str
    device_id: str
    total_slots: int


class SchedulerRegistration:
    def __init__(
        self,
        scheduler_address: str,
        tls: TlsFiles | None,
        registration: Registration,
        running_requests: Callable[[], int],
    ) -> None:
        self._address = scheduler_address
        self._tls = tls
        self._registration = registration
        self._running_requests = running_requests
        self.registered = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with open_channel(self._address, self._tls, peer="scheduler") as channel:
                    await self._register(scheduler_pb2_grpc.SchedulerServiceStub(channel))
            except grpc.aio.AioRpcError as error:
                if self.registered.is_set():
                    log.warning("registration with the scheduler at %s ended: %s", self._address, error.code().name)
            except asyncio.InvalidStateError:
                # A write to a call that has just ended: the scheduler went away between two beats.
                log.warning("registration with the scheduler at %s ended", self._address)
            except TimeoutError:
                log.warning("the scheduler at %s is silent; registering again", self._address)
            except Exception:
                # Whatever else breaks one attempt, the endpoint must keep trying: unregistered, it serves no one.
                log.exception("registration with the scheduler at %s failed; trying again", self._address)
            self.registered.clear()
            await asyncio.sleep(_RETRY_SECONDS)

    async def _register(self, stub: scheduler_pb2_grpc.SchedulerServiceStub) -> None:
        call = stub.RegisterEndpoint()
        try:
            await asyncio.wait_for(call.write(self._first_message()), _FIRST_ANSWER_SECONDS)
            answer = await asyncio.wait_for(call.read(), _FIRST_ANSWER_SECONDS)
            if answer is grpc.aio.EOF:
                return
            interval = answer.heartbeat_interval.ToNanoseconds() / 1e9 or 0.5
            silence = interval * SILENT_AFTER_INTERVALS
            log.info("registered with the scheduler at %s as %s", self._address, answer.endpoint_id)
            self.registered.set()
            while True:
                # The beat's pace, not an ordering: the scheduler counts three missed beats as gone.
                await asyncio.sleep(interval)
                heartbeat = pb.EndpointHeartbeat(running_requests=self._running_requests())
                await asyncio.wait_for(call.write(pb.RegisterEndpointRequest(heartbeat=heartbeat)), silence)
                if await asyncio.wait_for(call.read(), silence) is grpc.aio.EOF:
                    return
        finally:
            call.cancel()

    def _first_message(self) -> pb.RegisterEndpointRequest:
        registration = self._registration
        endpoint = pb.Endpoint(
            model=registration.model,
            address=registration.address,
            device_id=registration.device_id,
            node_name=registration.node_name,
        )
        return pb.RegisterEndpointRequest(
            registration=pb.EndpointRegistration(
                endpoint=endpoint, total_slots=registration.total_slots, running_requests=self._running_requests()
            )
        )
