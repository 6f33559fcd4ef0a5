"""The gRPC face of the scheduler: a slot is held for exactly as long as its AcquireSlot stream is open."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from meshserve.scheduler.v1 import scheduler_pb2 as pb
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.convert import to_ask, to_release, to_update
from orchestrator.scheduler.core.model import Grant
from orchestrator.scheduler.observability import traced_acquire
from orchestrator.scheduler.state_report import StateReporter

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SchedulerService"].full_name


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, broker: SlotBroker, reporter: StateReporter) -> None:
        self._broker = broker
        self._reporter = reporter

    async def AcquireSlot(
        self, request_iterator: AsyncIterator[pb.AcquireSlotRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AcquireSlotResponse]:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        ask = to_ask(await anext(aiter(request_iterator), pb.AcquireSlotRequest()), uuid.uuid4().hex, deadline)
        grant: Grant | None = None
        async with aclosing(traced_acquire(ask, self._broker.acquire(ask))) as updates:
            async for update in updates:
                grant = update if isinstance(update, Grant) else None
                yield to_update(update)
        assert grant is not None
        release = None
        try:
            # Hold the slot until the caller releases it, closes its side, or goes away (which cancels us).
            async for message in request_iterator:
                if message.HasField("release"):
                    release = to_release(message.release)
                    break
        finally:
            self._broker.release(grant.slot_id, release)

    async def GetSchedulerState(
        self, request: pb.GetSchedulerStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSchedulerStateResponse:
        return self._reporter.report()
