"""The gateway core with fakes at its ports: what it checks, what it asks for, and what it reports back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field

import pytest

from gateway.core.ports import SlotAsk, SlotGrant
from gateway.core.service import GatewayCore, GatewayRequest
from services.shared.domain import (
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    Priority,
    SamplingParams,
    SlotOutcome,
    Usage,
)
from services.shared.errors import ErrorKind, MeshError, invalid_argument, resource_exhausted, unavailable
from services.shared.identity import CallerLimits

MODELS = ["small", "large"]
LAST = GenerationChunk("!", (3,), FinishReason.LENGTH, Usage(2, 3))


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Release:
    outcome: SlotOutcome
    first_token_seconds: float | None
    tokens: int = 0


@dataclass
class FakeSlot:
    grant: SlotGrant
    releases: list[Release] = field(default_factory=list)
    recall: asyncio.Event = field(default_factory=asyncio.Event)
    loss: asyncio.Event = field(default_factory=asyncio.Event)

    async def recalled(self) -> None:
        await self.recall.wait()

    async def lost(self) -> str:
        await self.loss.wait()
        return "endpoint m@node-2:50061 left the mesh: it was silent for 1.5s"

    async def release(self, outcome: SlotOutcome, first_token_seconds: float | None, tokens: int = 0) -> None:
        self.releases.append(Release(outcome, first_token_seconds, tokens))


class FakeSlots:
    """Grants every ask on the model the scheduler would pick (the first fallback when told to)."""

    def __init__(self, clock: Clock, *, wait_seconds: float = 0.0, use_fallback: bool = False) -> None:
        self.clock, self.wait_seconds, self.use_fallback = clock, wait_seconds, use_fallback
        self.asks: list[tuple[SlotAsk, float | None]] = []
        self.slots: list[FakeSlot] = []
        self.refusal: MeshError | None = None

    @asynccontextmanager
    async def acquire(self, ask: SlotAsk, timeout: float | None) -> AsyncIterator[FakeSlot]:
        self.asks.append((ask, timeout))
        if self.refusal is not None:
            raise self.refusal
        self.clock.now += self.wait_seconds
        model = ask.fallback_models[0] if self.use_fallback else ask.model
        slot = FakeSlot(SlotGrant(f"slot-{len(self.slots)}", model, f"{model}.endpoint:1"))
        self.slots.append(slot)
        try:
            yield slot
        finally:
            # As the real adapter does: a slot the core did not release goes back as UNKNOWN.
            if not slot.releases:
                await slot.release(SlotOutcome.UNKNOWN, None)

    @property
    def only_release(self) -> Release:
        assert len(self.slots) == 1 and len(self.slots[0].releases) == 1
        return self.slots[0].releases[0]


class FakeInference:
    """Streams the scripted chunks, moving the clock on before each; then raises `failure`, if set."""

    def __init__(self, clock: Clock, chunks: list[GenerationChunk], seconds_per_chunk: float = 0.1) -> None:
        self.clock, self.chunks, self.seconds_per_chunk = clock, chunks, seconds_per_chunk
        self.failure: MeshError | None = None
        # The first calls that find the endpoint's own slots still taken, as when it has not yet seen a cancel.
        self.busy_calls = 0
        self.calls: list[tuple[str, str, float | None]] = []

    async def generate(
        self, address: str, model: str, request: GenerationRequest, timeout: float | None
    ) -> AsyncIterator[GenerationChunk]:
        self.calls.append((address, model, timeout))
        if len(self.calls) <= self.busy_calls:
            raise resource_exhausted("SLOTS_EXHAUSTED", "all 1 slots are busy", retry_after_seconds=0.5)
        for chunk in self.chunks:
            # Each chunk is a read from the network: the gateway's caller takes one before the next arrives.
            await asyncio.sleep(0)
            self.clock.now += self.seconds_per_chunk
            yield chunk
        if self.failure is not None:
            raise self.failure


def build(
    chunks: list[GenerationChunk] | None = None, **slot_options: object
) -> tuple[GatewayCore, FakeSlots, FakeInference, Clock]:
    clock = Clock()
    slots = FakeSlots(clock, **slot_options)  # type: ignore[arg-type]
    inference = FakeInference(clock, [GenerationChunk("a", (1,)), LAST] if chunks is None else chunks)

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    return GatewayCore(MODELS, slots, inference, clock, sleep), slots, inference, clock


def request(model: str = "", prompt: str = "hi", **options: object) -> GatewayRequest:
    return GatewayRequest(GenerationRequest(SamplingParams(), prompt, request_id="r1"), model, **options)  # type: ignore[arg-type]


async def run(core: GatewayCore, gateway_request: GatewayRequest, deadline: float | None = None) -> list:
    async with aclosing(core.generate(gateway_request, deadline)) as chunks:
        return [item async for item in chunks]


async def test_a_request_streams_from_the_granted_endpoint_and_reports_success() -> None:
    core, slots, inference, _ = build()
    items = await run(core, request("large", priority=Priority.HIGH, caller_id="alice"))
    assert [item.chunk for item in items] == [GenerationChunk("a", (1,)), LAST]
    assert {item.model for item in items} == {"large"}
    ask, _ = slots.asks[0]
    assert ask == SlotAsk("large", Priority.HIGH, "alice", "r1", (), None)
    assert inference.calls == [("large.endpoint:1", "large", None)]
    assert slots.only_release.outcome is SlotOutcome.SUCCEEDED


async def test_no_model_named_means_the_first_configured_one() -> None:
    core, slots, _, _ = build()
    await run(core, request(""))
    assert slots.asks[0][0].model == "small"


async def test_an_unknown_model_is_refused_before_any_slot_is_asked_for() -> None:
    core, slots, _, _ = build()
    with pytest.raises(MeshError) as refused:
        await run(core, request("huge"))
    assert (refused.value.kind, refused.value.reason) == (ErrorKind.NOT_FOUND, "UNKNOWN_MODEL")
    assert refused.value.metadata == {"model": "huge"}
    assert slots.asks == []


async def test_an_unknown_fallback_model_is_refused_before_any_slot_is_asked_for() -> None:
    core, slots, _, _ = build()
    with pytest.raises(MeshError) as refused:
        await run(core, request("large", fallback_models=("small", "tiny")))
    assert (refused.value.kind, refused.value.metadata) == (ErrorKind.NOT_FOUND, {"model": "tiny"})
    assert slots.asks == []


async def test_fallback_models_are_asked_for_and_the_granted_one_is_what_chunks_name() -> None:
    core, slots, inference, _ = build(use_fallback=True)
    items = await run(core, request("large", fallback_models=("small",)))
    assert slots.asks[0][0].fallback_models == ("small",)
    assert inference.calls[0][:2] == ("small.endpoint:1", "small")
    assert {item.model for item in items} == {"small"}


async def test_a_malformed_request_is_refused_before_any_slot_is_asked_for() -> None:
    core, slots, _, _ = build()
    with pytest.raises(MeshError) as refused:
        await run(core, request("small", prompt=""))
    assert refused.value.reason == "EMPTY_PROMPT"
    assert slots.asks == []


async def test_a_deadline_already_past_asks_for_no_slot() -> None:
    core, slots, _, clock = build()
    with pytest.raises(MeshError) as refused:
        await run(core, request("small"), deadline=clock.now - 1)
    assert refused.value.kind is ErrorKind.DEADLINE_EXCEEDED
    assert slots.asks == []


async def test_the_slot_wait_and_the_stream_share_one_deadline() -> None:
    core, slots, inference, clock = build(wait_seconds=2.0)
    await run(core, request("small"), deadline=clock.now + 10)
    assert slots.asks[0][1] == pytest.approx(10)
    assert inference.calls[0][2] == pytest.approx(8), "the endpoint gets what the queue left"


async def test_a_deadline_that_passes_while_queued_never_reaches_the_endpoint() -> None:
    core, slots, inference, clock = build(wait_seconds=5.0)
    with pytest.raises(MeshError) as refused:
        await run(core, request("small"), deadline=clock.now + 3)
    assert refused.value.kind is ErrorKind.DEADLINE_EXCEEDED
    assert inference.calls == []
    assert slots.only_release.outcome is SlotOutcome.CANCELLED


async def test_a_deadline_that_passes_mid_stream_reports_a_cancel_not_a_failure() -> None:
    core, slots, inference, clock = build([GenerationChunk("a", (1,))])
    inference.failure = MeshError("DEADLINE_EXCEEDED", "too slow", kind=ErrorKind.DEADLINE_EXCEEDED)
    with pytest.raises(MeshError):
        await run(core, request("small"), deadline=clock.now + 1)
    assert slots.only_release.outcome is SlotOutcome.CANCELLED


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (MeshError("ENGINE_OUT_OF_MEMORY", "no room", kind=ErrorKind.RESOURCE_EXHAUSTED), SlotOutcome.OUT_OF_MEMORY),
        (unavailable("ENGINE_FAILED", "engine died"), SlotOutcome.FAILED),
        (unavailable("INFERENCE_UNAVAILABLE", "connection refused", 1.0), SlotOutcome.FAILED),
        (invalid_argument("PROMPT_TOO_LONG", "too long"), SlotOutcome.CANCELLED),
        (MeshError("SHED", "queue full", kind=ErrorKind.RESOURCE_EXHAUSTED), SlotOutcome.CANCELLED),
    ],
    ids=lambda value: value.reason if isinstance(value, MeshError) else value.name,
)
async def test_each_kind_of_endpoint_error_is_reported_with_its_outcome(
    failure: MeshError, outcome: SlotOutcome
) -> None:
    core, slots, inference, _ = build([GenerationChunk("a", (1,))])
    inference.failure = failure
    with pytest.raises(MeshError) as raised:
        await run(core, request("small"))
    assert raised.value is failure, "the endpoint's error reaches the caller unchanged"
    assert slots.only_release.outcome is outcome


async def test_a_caller_that_leaves_mid_stream_reports_a_cancel() -> None:
    core, slots, _, _ = build()
    async with aclosing(core.generate(request("small"), None)) as chunks:
        await anext(chunks)
    assert slots.only_release.outcome is SlotOutcome.CANCELLED
    assert slots.only_release.first_token_seconds == pytest.approx(0.1)


async def test_a_refused_slot_reaches_the_caller_and_nothing_is_streamed() -> None:
    core, slots, inference, _ = build()
    slots.refusal = MeshError("QUEUE_FULL", "full", retry_after_seconds=2.0, kind=ErrorKind.RESOURCE_EXHAUSTED)
    with pytest.raises(MeshError) as refused:
        await run(core, request("small"))
    assert refused.value is slots.refusal
    assert inference.calls == []


async def test_the_first_token_time_runs_from_the_grant_to_the_first_chunk() -> None:
    core, slots, inference, _ = build(wait_seconds=7.0)
    inference.seconds_per_chunk = 0.25
    await run(core, request("small"))
    assert slots.only_release.first_token_seconds == pytest.approx(0.25), "queue time is not first-token time"


async def test_a_stream_with_no_chunk_reports_no_first_token_time() -> None:
    core, slots, _, _ = build([])
    assert await run(core, request("small")) == []
    assert slots.only_release == Release(SlotOutcome.SUCCEEDED, None)


async def test_an_endpoint_that_has_not_yet_freed_its_slot_is_asked_again_on_the_same_grant() -> None:
    core, slots, inference, _ = build()
    inference.busy_calls = 3
    items = await run(core, request("small"))
    assert [item.chunk for item in items] == [GenerationChunk("a", (1,)), LAST], "admitted work is not lost"
    assert len(inference.calls) == 4 and len(slots.asks) == 1
    assert slots.only_release.outcome is SlotOutcome.SUCCEEDED


async def test_an_endpoint_that_stays_full_is_refused_to_the_caller_after_the_grace() -> None:
    core, slots, inference, _ = build()
    inference.busy_calls = 10_000
    with pytest.raises(MeshError) as refused:
        await run(core, request("small"))
    assert refused.value.reason == "SLOTS_EXHAUSTED"
    assert 1 < len(inference.calls) < 10_000
    assert slots.only_release.outcome is SlotOutcome.CANCELLED


async def test_the_release_reports_the_tokens_the_endpoint_counted() -> None:
    core, slots, _, _ = build()
    await run(core, request("small"))
    assert slots.only_release.tokens == 5, "prompt 2 + completion 3, as the last chunk's usage says"


async def test_a_stream_cut_short_reports_the_tokens_streamed_so_far() -> None:
    core, slots, _, _ = build([GenerationChunk("a", (1,)), GenerationChunk("b", (2,)), LAST])
    async with aclosing(core.generate(request("small"), None)) as chunks:
        await anext(chunks)
        await anext(chunks)
    assert slots.only_release.tokens == 2


async def test_the_credentials_limits_travel_with_the_ask() -> None:
    core, slots, _, _ = build()
    limits = CallerLimits(60, 1000, 2, Priority.HIGH)
    await run(core, request("small", limits=limits))
    assert slots.asks[0][0].limits == limits


class StallingInference:
    """One token, then nothing more until the call is cancelled: a long generation in progress."""

    def __init__(self) -> None:
        self.stalled = asyncio.Event()
        self.forgotten: list[str] = []

    def forget(self, address: str) -> None:
        self.forgotten.append(address)

    async def generate(
        self, address: str, model: str, request: GenerationRequest, timeout: float | None
    ) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk("a", (1,))
        self.stalled.set()
        await asyncio.Event().wait()


@pytest.mark.parametrize("options", [{"priority": Priority.LOW}, {"limits": CallerLimits(max_priority=Priority.LOW)}])
async def test_a_recalled_low_slot_stops_its_generation_and_says_to_ask_again(options: dict) -> None:
    clock = Clock()
    slots = FakeSlots(clock)
    core = GatewayCore(MODELS, slots, StallingInference(), clock)
    async with aclosing(core.generate(request(**options), None)) as stream:
        assert (await anext(stream)).chunk.text == "a"
        slots.slots[0].recall.set()
        with pytest.raises(MeshError) as refused:
            await anext(stream)
    assert refused.value.reason == "PREEMPTED" and refused.value.kind is ErrorKind.UNAVAILABLE
    # Not the endpoint's fault: the breaker learns nothing from it.
    assert slots.only_release.outcome is SlotOutcome.CANCELLED


@pytest.mark.parametrize("priority", [Priority.LOW, Priority.NORMAL, Priority.CRITICAL])
async def test_a_slot_lost_with_its_endpoint_fails_the_stream_at_once_whatever_its_priority(priority: Priority) -> None:
    clock = Clock()
    slots = FakeSlots(clock)
    inference = StallingInference()
    core = GatewayCore(MODELS, slots, inference, clock)
    async with aclosing(core.generate(request(priority=priority), None)) as stream:
        assert (await anext(stream)).chunk.text == "a"
        # The endpoint will never send its next token: the scheduler's word ends the wait.
        slots.slots[0].loss.set()
        with pytest.raises(MeshError) as failed:
            await anext(stream)
    assert failed.value.reason == "ENDPOINT_LOST" and failed.value.kind is ErrorKind.UNAVAILABLE
    assert "left the mesh" in failed.value.message and failed.value.retry_after_seconds == 1.0
    assert slots.only_release.outcome is SlotOutcome.CANCELLED
    # A connection to an endpoint that vanished may be dead without knowing it: the next call opens a new one.
    assert inference.forgotten == ["small.endpoint:1"]


async def test_a_low_caller_that_goes_away_mid_token_closes_the_stream_cleanly() -> None:
    clock = Clock()
    slots = FakeSlots(clock)
    inference = StallingInference()
    core = GatewayCore(MODELS, slots, inference, clock)

    async def read_all() -> None:
        async for _ in core.generate(request(priority=Priority.LOW), None):
            pass

    reading = asyncio.create_task(read_all())
    await inference.stalled.wait()  # a step of the stream now waits for the second token
    reading.cancel()
    # A step still running when the caller leaves is stopped before the stream is closed, so the caller
    # sees its own cancellation, not "aclose(): asynchronous generator is already running".
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert slots.only_release.outcome is SlotOutcome.CANCELLED


async def test_a_recall_means_nothing_to_work_above_low() -> None:
    core, slots, _, _ = build()
    stream = core.generate(request(priority=Priority.NORMAL), None)
    first = await anext(stream)
    slots.slots[0].recall.set()
    rest = [item async for item in stream]
    assert [item.chunk for item in [first, *rest]] == [GenerationChunk("a", (1,)), LAST]
    assert slots.only_release.outcome is SlotOutcome.SUCCEEDED
