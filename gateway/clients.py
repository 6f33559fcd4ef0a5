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
from gateway.core.ports import HeldSlot, SlotAsk, SlotGrant
from services.shared.channels import open_channel
from services.shared.domain import GenerationChunk, GenerationRequest, SlotOutcome
from services.shared.errors import unavailable
from services.shared.proto_maps import SLOT_OUTCOME_TO_PROTO, SLOT_PRIORITY_TO_PROTO
from services.shared.status_details import details_of, to_mesh_error
from services.shared.tls import TlsFiles
from telemetry.spans import client_span, record_failure

ACQUIRE_SLOT = "/meshserve.scheduler.v1.SchedulerService/AcquireSlot"
GENERATE = "/meshserve.inference.v1.InferenceService/Generate"
_RELEASE_WAIT_SECONDS = 1.0


def failed_call(span, error: grpc.aio.AioRpcError, upstream: str) -> Exception:
    """The typed error of a failed call to `upstream`, recorded on the client span that made it."""
    details = details_of(error)
    record_failure(span, details.code, details.reason or details.code.name, details.message)
    return to_mesh_error(error, upstream)


class SchedulerClient:
    def __init__(self, address: str, tls: TlsFiles | None) -> None:
        self._address = address
        self._channel = open_channel(address, tls, peer="scheduler")
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)

    @asynccontextmanager
    async def acquire(self, ask: SlotAsk, timeout: float | None) -> AsyncIterator[HeldSlot]:
        with client_span(ACQUIRE_SLOT, self._address) as (span, metadata):
            call = self._stub.AcquireSlot(timeout=timeout, metadata=metadata)
            try:
                await call.write(_ask_message(ask))
                grant = await _wait_for_grant(call)
            except grpc.aio.AioRpcError as error:
                call.cancel()
                raise failed_call(span, error, "scheduler") from None
            slot = _SlotStream(call, SlotGrant(grant.slot_id, grant.model, grant.endpoint.address))
            try:
                yield slot
            finally:
                await slot.release(SlotOutcome.UNKNOWN, None)
                slot.stop_following()

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
        priority=SLOT_PRIORITY_TO_PROTO[ask.priority],
        caller_id=ask.caller_id,
        request_id=ask.request_id,
    )
    if ask.limits is not None:
        limits = ask.limits
        slot_ask.limits.CopyFrom(
            spb.CallerLimits(
                requests_per_minute=limits.requests_per_minute or 0,
                tokens_per_minute=limits.tokens_per_minute or 0,
                max_concurrent=limits.max_concurrent or 0,
                max_priority=SLOT_PRIORITY_TO_PROTO[limits.max_priority],
            )
        )
    return spb.AcquireSlotRequest(ask=slot_ask)


class _SlotStream:
    """A granted slot: its AcquireSlot stream stays open until release(), and closing it frees the slot."""

    def __init__(self, call: grpc.aio.StreamStreamCall, grant: SlotGrant) -> None:
        self._call = call
        self._grant = grant
        self._released = False
        self._recall = asyncio.Event()
        self._lost = asyncio.Event()
        self._lost_reason = ""
        # Reads what the scheduler says after the grant: a recall or a loss, then the end of the stream.
        self._following = asyncio.create_task(self._follow())

    @property
    def grant(self) -> SlotGrant:
        return self._grant

    async def recalled(self) -> None:
        await self._recall.wait()

    async def lost(self) -> str:
        await self._lost.wait()
        return self._lost_reason

    def stop_following(self) -> None:
        self._following.cancel()

    async def _follow(self) -> None:
        try:
            while (response := await self._call.read()) is not grpc.aio.EOF:
                if response.HasField("recalled"):
                    self._recall.set()
                elif response.HasField("lost"):
                    self._lost_reason = response.lost.reason
                    self._lost.set()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass

    async def release(self, outcome: SlotOutcome, first_token_seconds: float | None, tokens: int = 0) -> None:
        if self._released:
            return
        self._released = True
        # The scheduler adds the two; the total is what the gateway knows when a stream is cut short.
        release = spb.SlotRelease(outcome=SLOT_OUTCOME_TO_PROTO[outcome], output_tokens=tokens)
        if first_token_seconds is not None:
            release.time_to_first_token.FromNanoseconds(int(first_token_seconds * 1e9))
        try:
            await self._call.write(spb.AcquireSlotRequest(release=release))
            await self._call.done_writing()
            # The scheduler ends the stream once it has the release; waiting for that keeps the outcome from
            # racing the cancel below. A scheduler that does not answer in time still gets the cancel.
            await asyncio.wait_for(asyncio.shield(self._following), _RELEASE_WAIT_SECONDS)
        except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        finally:
            self._call.cancel()


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
        self._closing: set[asyncio.Task[None]] = set()

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
                raise failed_call(span, error, "inference") from None
            finally:
                call.cancel()

    def forget(self, address: str) -> None:
        channel, _ = self._stubs.pop(address, (None, None))
        if channel is not None:
            closing = asyncio.get_running_loop().create_task(channel.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def _stub(self, address: str) -> inference_pb2_grpc.InferenceServiceStub:
        if address not in self._stubs:
            channel = open_channel(address, self._tls, peer="inference")
            self._stubs[address] = (channel, inference_pb2_grpc.InferenceServiceStub(channel))
        return self._stubs[address][1]

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()
