"""The gateway's relay of an endpoint's stream: one chunk at a time while the caller keeps up, what built up
joined into one when it lags, the endpoint's stream closed however the relay ends, and a slot taken back
reported after what already arrived."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from gateway.core.relay import ENDPOINT_LOST, PREEMPTED, join_chunks, relay
from services.shared.domain import FinishReason, GenerationChunk, TokenChoice, TokenLogprob, Usage
from services.shared.errors import MeshError, unavailable
from tests.support import until

END = object()


class Endpoint:
    """An endpoint's stream fed by the test: each put() is a message arriving from the network."""

    def __init__(self) -> None:
        self.arriving: asyncio.Queue[object] = asyncio.Queue()
        self.closed = False

    def put(self, *items: object) -> None:
        for item in items:
            self.arriving.put_nowait(item)

    async def stream(self) -> AsyncIterator[GenerationChunk]:
        try:
            while (item := await self.arriving.get()) is not END:
                if isinstance(item, MeshError):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self.closed = True


class Slot:
    def __init__(self) -> None:
        self.lost_reason: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.recall = asyncio.Event()

    async def lost(self) -> str:
        return await self.lost_reason

    async def recalled(self) -> None:
        await self.recall.wait()


def chunk(text: str, token: int) -> GenerationChunk:
    return GenerationChunk(text, (token,))


async def test_a_caller_that_keeps_up_gets_each_chunk_as_it_came() -> None:
    endpoint = Endpoint()
    async with aclosing(relay(endpoint.stream(), Slot(), recallable=False)) as chunks:
        for token in range(1, 4):
            endpoint.put(chunk(f"t{token}", token))
            assert await anext(chunks) == chunk(f"t{token}", token)


async def test_what_built_up_while_the_caller_was_busy_comes_as_one_chunk() -> None:
    endpoint = Endpoint()
    last = GenerationChunk("d", (4,), FinishReason.LENGTH, Usage(3, 4))
    async with aclosing(relay(endpoint.stream(), Slot(), recallable=False)) as chunks:
        endpoint.put(chunk("a", 1))
        assert await anext(chunks) == chunk("a", 1)
        # The caller is busy elsewhere while three more arrive.
        endpoint.put(chunk("b", 2), chunk("c", 3), last)
        await until(endpoint.arriving.empty, "the endpoint's messages read")
        assert await anext(chunks) == GenerationChunk("bcd", (2, 3, 4), FinishReason.LENGTH, Usage(3, 4))
        endpoint.put(END)
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)
    assert endpoint.closed


def test_joined_chunks_keep_every_tokens_logprob_in_order() -> None:
    def logprob(token: str) -> TokenLogprob:
        return TokenLogprob(TokenChoice(token, -1.0))

    first = GenerationChunk("a", (1,), logprobs=(logprob("a"),))
    second = GenerationChunk("bc", (2, 3), FinishReason.STOP, Usage(1, 3), (logprob("b"), logprob("c")))
    joined = join_chunks([first, second])
    assert [entry.chosen.token for entry in joined.logprobs] == ["a", "b", "c"]
    assert (joined.text, joined.token_ids, joined.finish_reason, joined.usage) == (
        "abc",
        (1, 2, 3),
        FinishReason.STOP,
        Usage(1, 3),
    )
    assert join_chunks([first]) is first


async def test_an_endpoint_failure_comes_after_what_arrived_before_it() -> None:
    endpoint = Endpoint()
    failure = unavailable("ENGINE_STEP_FAILED", "the step failed")
    async with aclosing(relay(endpoint.stream(), Slot(), recallable=False)) as chunks:
        endpoint.put(chunk("a", 1))
        assert await anext(chunks) == chunk("a", 1)
        endpoint.put(chunk("b", 2), chunk("c", 3), failure)
        await until(endpoint.arriving.empty, "the endpoint's messages read")
        assert await anext(chunks) == GenerationChunk("bc", (2, 3))
        with pytest.raises(MeshError) as raised:
            await anext(chunks)
    assert raised.value is failure


async def test_a_lost_slot_ends_the_relay_and_closes_the_endpoints_stream() -> None:
    endpoint, slot = Endpoint(), Slot()
    async with aclosing(relay(endpoint.stream(), slot, recallable=False)) as chunks:
        endpoint.put(chunk("a", 1))
        assert await anext(chunks) == chunk("a", 1)
        slot.lost_reason.set_result("endpoint 10.0.0.2:50051 left the mesh")
        with pytest.raises(MeshError) as raised:
            await anext(chunks)
    assert raised.value.reason == ENDPOINT_LOST
    assert "left the mesh" in raised.value.message
    assert endpoint.closed


async def test_a_recall_ends_only_recallable_work() -> None:
    kept, recalled = Endpoint(), Endpoint()
    kept_slot, recalled_slot = Slot(), Slot()
    keeping = relay(kept.stream(), kept_slot, recallable=False)
    recalling = relay(recalled.stream(), recalled_slot, recallable=True)
    async with aclosing(keeping), aclosing(recalling):
        kept_slot.recall.set()
        recalled_slot.recall.set()
        with pytest.raises(MeshError) as raised:
            await anext(recalling)
        assert raised.value.reason == PREEMPTED
        kept.put(chunk("a", 1))
        assert await anext(keeping) == chunk("a", 1)
    assert kept.closed and recalled.closed


async def test_a_caller_that_goes_away_closes_the_endpoints_stream() -> None:
    endpoint = Endpoint()
    chunks = relay(endpoint.stream(), Slot(), recallable=False)
    endpoint.put(chunk("a", 1))
    await anext(chunks)
    await chunks.aclose()
    assert endpoint.closed
