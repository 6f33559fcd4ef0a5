"""The gateway's grpc adapters for its ports: the scheduler's slot stream and the inference endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from meshserve.inference.v1 import inference_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2 as spb
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from gateway.convert import from_inference_response, to_inference_request
from gateway.core.ports import SlotAsk, SlotGrant
from orchestrator.scheduler.convert import OUTCOME_TO_PROTO, PRIORITY_TO_PROTO
from services.inference.core.model import GenerationChunk, GenerationRequest
from services.shared.channels import open_channel
from services.shared.errors import unavailable
from services.shared.status_details import details_of, to_mesh_error
from services.shared.tls import TlsFiles
from telemetry.spans import client_span, record_failure

ACQUIRE_SLOT = "/meshserve.scheduler.v1.SchedulerService/AcquireSlot"
GENERATE = "/meshserve.inference.v1.InferenceService/Generate"
_RELEASE_WAIT_SECONDS = 1.0


def _failed(span, error: grpc.aio.AioRpcError, upstream: str) -> Exception:
    details = details_of(error)
    record_failure(span, details.code, details.reason or details.code.name, details.message)
    return to_mesh_error(error, upstream)


class SchedulerClient:
    def __init__(self, address: str, tls: TlsFiles | None) -> None:
        self._address = address
        self._channel = open_channel(address, tls)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)

    @asynccontextmanager
    async def acquire(self, ask: SlotAsk, timeout: float | None) -> AsyncIterator[SlotGrant]:
        with client_span(ACQUIRE_SLOT, self._address) as (span, metadata):
            call = self._stub.AcquireSlot(timeout=timeout, metadata=metadata)
            try:
                await call.write(_ask_message(ask))
                grant = await _wait_for_grant(call)
            except grpc.aio.AioRpcError as error:
                call.cancel()
                raise _failed(span, error, "scheduler") from None
            slot = SlotGrant(grant.slot_id, grant.model, grant.endpoint.address)
            try:
                yield slot
            finally:
                await _give_back(call, slot)

    async def state(self, timeout: float = 5.0) -> spb.GetSchedulerStateResponse:
        try:
            return await self._stub.GetSchedulerState(spb.GetSchedulerStateRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise to_mesh_error(error, "scheduler") from None

    async def close(self) -> None:
        await self._channel.close()


def _ask_message(ask: SlotAsk) -> spb.AcquireSlotRequest:
    slot_ask = spb.SlotAsk(
        model=ask.model,
        fallback_models=ask.fallback_models,
        priority=PRIORITY_TO_PROTO[ask.priority],
        caller_id=ask.caller_id,
        request_id=ask.request_id,
    )
    return spb.AcquireSlotRequest(ask=slot_ask)


async def _give_back(call: grpc.aio.StreamStreamCall, slot: SlotGrant) -> None:
    """Tells the scheduler how the work ended, then closes the stream: closing is what frees the slot."""
    release = spb.SlotRelease(outcome=OUTCOME_TO_PROTO[slot.outcome])
    if slot.first_token_seconds is not None:
        release.time_to_first_token.FromNanoseconds(int(slot.first_token_seconds * 1e9))
    try:
        await call.write(spb.AcquireSlotRequest(release=release))
        await call.done_writing()
        # The scheduler ends the stream once it has the release; waiting for that keeps the outcome from
        # racing the cancel below. A scheduler that does not answer in time still gets the cancel.
        await asyncio.wait_for(call.read(), _RELEASE_WAIT_SECONDS)
    except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
    finally:
        call.cancel()


async def _wait_for_grant(call: grpc.aio.StreamStreamCall) -> spb.SlotGrant:
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            raise unavailable("SCHEDULER_UNAVAILABLE", "the scheduler closed the slot stream without a grant", 1.0)
        if response.HasField("granted"):
            return response.granted


class InferenceClients:
    """One channel per endpoint address, opened on first use and kept."""

    def __init__(self, tls: TlsFiles | None) -> None:
        self._tls = tls
        self._stubs: dict[str, tuple[grpc.aio.Channel, inference_pb2_grpc.InferenceServiceStub]] = {}

    async def generate(
        self, address: str, model: str, request: GenerationRequest, timeout: float | None
    ) -> AsyncIterator[GenerationChunk]:
        with client_span(GENERATE, address) as (span, metadata):
            call = self._stub(address).Generate(
                to_inference_request(model, request), timeout=timeout, metadata=metadata
            )
            try:
                async for message in call:
                    yield from_inference_response(message)
            except grpc.aio.AioRpcError as error:
                raise _failed(span, error, "inference") from None
            finally:
                call.cancel()

    def _stub(self, address: str) -> inference_pb2_grpc.InferenceServiceStub:
        if address not in self._stubs:
            channel = open_channel(address, self._tls)
            self._stubs[address] = (channel, inference_pb2_grpc.InferenceServiceStub(channel))
        return self._stubs[address][1]

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()
