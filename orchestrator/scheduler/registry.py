"""Endpoints that registered themselves: each is part of the mesh while its RegisterEndpoint stream beats.

An endpoint joins with its first message, and the scheduler follows its health from then on. It leaves
when it closes the stream, when the stream breaks, or when it says nothing for `silent_after_intervals`
heartbeats (its node cut off): then it gets no new work and its held slots are lost, so their callers
fail at once rather than wait on a stream that is gone. An endpoint that registers again under the same
address (it restarted, or its node came back) replaces its earlier registration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from google.protobuf import duration_pb2
from meshserve.scheduler.v1 import scheduler_pb2 as pb

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.convert import to_registered_spec
from orchestrator.scheduler.endpoint_watcher import EndpointWatcher
from services.shared.errors import ErrorKind, MeshError
from services.shared.liveness import SILENT_AFTER_INTERVALS

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 0.5


class EndpointRegistry:
    def __init__(
        self,
        broker: SlotBroker,
        watcher: EndpointWatcher,
        keep_alive_of: Callable[[str], float | None],
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        silent_after_intervals: int = SILENT_AFTER_INTERVALS,
    ) -> None:
        self._broker = broker
        self._watcher = watcher
        self._keep_alive_of = keep_alive_of
        self._heartbeat = duration_pb2.Duration()
        self._heartbeat.FromNanoseconds(int(heartbeat_seconds * 1e9))
        self._silence_seconds = heartbeat_seconds * silent_after_intervals
        # The live registration of each endpoint; set when a newer one replaces it.
        self._current: dict[str, asyncio.Event] = {}

    @property
    def registered(self) -> list[str]:
        return sorted(self._current)

    async def serve(
        self, messages: AsyncIterator[pb.RegisterEndpointRequest]
    ) -> AsyncIterator[pb.RegisterEndpointResponse]:
        """Answers one endpoint's registration stream for as long as it lives and beats."""
        try:
            first = await asyncio.wait_for(anext(aiter(messages), pb.RegisterEndpointRequest()), self._silence_seconds)
        except TimeoutError:
            raise MeshError(
                "REGISTRATION_TIMEOUT", "no registration arrived in time", kind=ErrorKind.DEADLINE_EXCEEDED
            ) from None
        spec, running = to_registered_spec(first, self._keep_alive_of(first.registration.endpoint.model))
        endpoint_id = spec.endpoint_id
        if endpoint_id in self._current:
            self._current.pop(endpoint_id).set()
            self._leave(endpoint_id, "it registered again")
        replaced = self._current[endpoint_id] = asyncio.Event()
        log.info("endpoint %s joined from node %s, running %d", endpoint_id, spec.node_name or "?", running)
        self._broker.endpoint_joined(spec, running)
        self._watcher.follow(spec)
        reason = "it closed its registration"
        try:
            yield self._ack(endpoint_id)
            async for message in self._beats(messages, replaced):
                if message.HasField("heartbeat"):
                    self._broker.endpoint_running(endpoint_id, max(0, message.heartbeat.running_requests))
                yield self._ack(endpoint_id)
        except TimeoutError:
            reason = f"it was silent for {self._silence_seconds:g}s"
        finally:
            if self._current.get(endpoint_id) is replaced:
                del self._current[endpoint_id]
                self._leave(endpoint_id, reason)

    async def _beats(
        self, messages: AsyncIterator[pb.RegisterEndpointRequest], replaced: asyncio.Event
    ) -> AsyncIterator[pb.RegisterEndpointRequest]:
        """The endpoint's messages until it closes the stream or is replaced; TimeoutError when it falls silent."""
        superseded = asyncio.ensure_future(replaced.wait())
        try:
            while True:
                reading = asyncio.ensure_future(anext(aiter(messages), None))
                done, _ = await asyncio.wait(
                    {reading, superseded}, timeout=self._silence_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if superseded in done or not done:
                    # Not awaited: grpc finishes a cancelled read only when the call ends, which is what follows.
                    reading.cancel()
                    if superseded in done:
                        return
                    raise TimeoutError
                message = reading.result()
                if message is None:
                    return
                yield message
        finally:
            superseded.cancel()

    def _leave(self, endpoint_id: str, reason: str) -> None:
        log.warning("endpoint %s left: %s", endpoint_id, reason)
        self._watcher.unfollow(endpoint_id)
        self._broker.endpoint_left(endpoint_id, f"endpoint {endpoint_id} left the mesh: {reason}")

    def _ack(self, endpoint_id: str) -> pb.RegisterEndpointResponse:
        return pb.RegisterEndpointResponse(endpoint_id=endpoint_id, heartbeat_interval=self._heartbeat)
