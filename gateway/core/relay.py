"""Relaying an endpoint's stream to the caller, until the scheduler takes the slot back.

A reader task drains the endpoint's stream as fast as it comes. The caller takes everything that arrived
since it last looked, as one chunk: a single chunk while it keeps up, and what built up, joined, when it
falls behind. So a reader that lags (a slow client, or a gateway whose CPU is busy with many streams) costs
every hop after it fewer messages instead of a backlog that grows until the stream stalls, and the tokens
still arrive as soon as the caller can take them.

The scheduler may take the slot back at any moment: recalled for more urgent work (LOW work only), or lost
with its endpoint (stopped, or its node cut off). What already arrived is still delivered; then the caller
is told to ask again, rather than left waiting on tokens that will not come.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing, suppress

from gateway.core.ports import HeldSlot
from services.shared.domain import GenerationChunk
from services.shared.errors import MeshError, unavailable

PREEMPTED = "PREEMPTED"
ENDPOINT_LOST = "ENDPOINT_LOST"


def join_chunks(chunks: list[GenerationChunk]) -> GenerationChunk:
    """Consecutive chunks of one stream as one: their text, tokens and logprobs in order; the finish reason
    and usage, which only a stream's last chunk carries, from the last."""
    if len(chunks) == 1:
        return chunks[0]
    last = chunks[-1]
    return GenerationChunk(
        "".join(chunk.text for chunk in chunks),
        tuple(token for chunk in chunks for token in chunk.token_ids),
        last.finish_reason,
        last.usage,
        tuple(entry for chunk in chunks for entry in chunk.logprobs),
    )


class _Arrivals:
    """What the reader task has drained and the caller not yet taken, and how the stream ended."""

    def __init__(self) -> None:
        self.chunks: list[GenerationChunk] = []
        self.ended = False
        self.failure: BaseException | None = None
        self.taken_back: MeshError | None = None
        self.wake = asyncio.Event()

    async def something_new(self) -> None:
        """Returns once there is a chunk to take, or the stream ended, failed or was taken back."""
        while not (self.chunks or self.ended or self.failure is not None or self.taken_back is not None):
            self.wake.clear()
            await self.wake.wait()

    def take(self) -> GenerationChunk:
        chunks, self.chunks = self.chunks, []
        return join_chunks(chunks)


async def relay(
    chunks: AsyncIterator[GenerationChunk], slot: HeldSlot, recallable: bool
) -> AsyncIterator[GenerationChunk]:
    """The endpoint's chunks, joined where the caller lagged, until the stream ends or the slot is taken back."""
    arrivals = _Arrivals()
    reader = asyncio.ensure_future(_drain(chunks, arrivals))
    watchers = [asyncio.ensure_future(_taken_back(slot.lost(), arrivals, _lost))]
    if recallable:
        watchers.append(asyncio.ensure_future(_taken_back(slot.recalled(), arrivals, _recalled)))
    try:
        while True:
            await arrivals.something_new()
            # How the stream stood before taking what arrived: what came before its end is delivered first.
            ended, failure, taken_back = arrivals.ended, arrivals.failure, arrivals.taken_back
            if arrivals.chunks:
                yield arrivals.take()
            if ended:
                return
            if failure is not None:
                raise failure
            if taken_back is not None:
                raise taken_back
    finally:
        for watcher in watchers:
            watcher.cancel()
        # A caller that went away, or a slot taken back, leaves the reader waiting on the endpoint; the
        # endpoint's stream is closed (and its call cancelled) by the reader as it stops.
        reader.cancel()
        with suppress(asyncio.CancelledError):
            await reader


async def _drain(chunks: AsyncIterator[GenerationChunk], arrivals: _Arrivals) -> None:
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                arrivals.chunks.append(chunk)
                arrivals.wake.set()
        arrivals.ended = True
    except Exception as failure:  # handed to the caller's task, which raises it there
        arrivals.failure = failure
    finally:
        arrivals.wake.set()


async def _taken_back(event: Awaitable[object], arrivals: _Arrivals, error_for) -> None:
    arrivals.taken_back = error_for(await event)
    arrivals.wake.set()


def _lost(reason: object) -> MeshError:
    return unavailable(ENDPOINT_LOST, f"{reason}; ask again", 1.0)


def _recalled(_: object) -> MeshError:
    return unavailable(PREEMPTED, "more urgent work took this LOW request's slot; ask again", 1.0)
