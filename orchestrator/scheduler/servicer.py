"""The gRPC face of the scheduler: a slot is held for exactly as long as its AcquireSlot stream is open."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from meshserve.scheduler.v1 import scheduler_pb2 as pb
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.convert import to_ask, to_release, to_slot_news, to_update
from orchestrator.scheduler.core.model import Grant, Release
from orchestrator.scheduler.observability import traced_acquire
from orchestrator.scheduler.registry import EndpointRegistry
from orchestrator.scheduler.state_report import StateReporter

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SchedulerService"].full_name
REGISTER_ENDPOINT = f"/{SERVICE_NAME}/RegisterEndpoint"


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, broker: SlotBroker, reporter: StateReporter, registry: EndpointRegistry) -> None:
        self._broker = broker
        self._reporter = reporter
        self._registry = registry

    async def AcquireSlot(
        self, request_iterator: AsyncIterator[pb.AcquireSlotRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AcquireSlotResponse]:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        ask = to_ask(await anext(aiter(request_iterator), pb.AcquireSlotRequest()), uuid.uuid4().hex, deadline)
        grant: Grant | None = None
        release = None
        try:
            async with aclosing(traced_acquire(ask, self._broker.acquire(ask))) as updates:
                async for update in updates:
                    # Noted before it is sent: a caller that goes away while it is sent still gives it back.
                    grant = update if isinstance(update, Grant) else None
                    yield to_update(update)
            assert grant is not None
            async with aclosing(self._hold(grant, request_iterator)) as told:
                async for news in told:
                    if isinstance(news, pb.AcquireSlotResponse):
                        yield news
                    else:
                        release = news
        finally:
            if grant is not None:
                self._broker.release(grant.slot_id, release)

    async def _hold(
        self, grant: Grant, request_iterator: AsyncIterator[pb.AcquireSlotRequest]
    ) -> AsyncIterator[pb.AcquireSlotResponse | Release]:
        """Holds the slot until the caller releases it (yielding its release), closes its side, or goes away
        (which cancels us); tells it when the slot is recalled or lost, and keeps holding until it lets go."""
        news_queue = self._broker.slot_news(grant.slot_id)
        news = asyncio.ensure_future(news_queue.get())
        reading = asyncio.ensure_future(anext(aiter(request_iterator), None))
        try:
            while True:
                await asyncio.wait({reading, news}, return_when=asyncio.FIRST_COMPLETED)
                if news.done():
                    yield to_slot_news(news.result())
                    news = asyncio.ensure_future(news_queue.get())
                if not reading.done():
                    continue
                message = reading.result()
                if message is None:
                    return
                if message.HasField("release"):
                    yield to_release(message.release)
                    return
                reading = asyncio.ensure_future(anext(aiter(request_iterator), None))
        finally:
            reading.cancel()
            news.cancel()

    async def RegisterEndpoint(
        self, request_iterator: AsyncIterator[pb.RegisterEndpointRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RegisterEndpointResponse]:
        async with aclosing(self._registry.serve(request_iterator)) as acks:
            async for ack in acks:
                yield ack

    async def GetSchedulerState(
        self, request: pb.GetSchedulerStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSchedulerStateResponse:
        return self._reporter.report()
