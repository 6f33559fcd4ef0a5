"""The inference core's residency: unload an idle model, refuse while busy, load again on the next request."""

import asyncio
from contextlib import aclosing

import pytest

from services.inference.core.model import EngineActivity, ModelMetadata, ModelState, PreparedPrompt
from services.inference.core.service import InferenceCore
from services.inference.core.slots import SlotPool
from services.inference.core.validation import RequestLimits
from services.shared.domain import GenerationChunk, GenerationRequest
from services.shared.errors import ErrorKind, MeshError

METADATA = ModelMetadata("m", "fake", 64, 1, 10, 1, 11)


class CountingEngine:
    """Counts loads and closes; streams one chunk per call, pausing so a test can act mid-stream."""

    def __init__(self) -> None:
        self.loads = 0
        self.closes = 0
        self.loaded = False
        self.release = asyncio.Event()
        self.generating = asyncio.Event()

    def load(self) -> ModelMetadata:
        self.loads += 1
        self.loaded = True
        return METADATA

    async def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        assert self.loaded, "prepare on an unloaded engine"
        return PreparedPrompt((1, 2))

    async def generate(self, request: GenerationRequest, prompt: PreparedPrompt):
        assert self.loaded, "generate on an unloaded engine"
        self.generating.set()
        await self.release.wait()
        yield GenerationChunk("hi", (3,))

    async def close(self) -> None:
        self.closes += 1
        self.loaded = False

    def activity(self) -> EngineActivity:
        assert self.loaded, "activity asked of an unloaded engine"
        return EngineActivity(0, 0, 0, 0)


def ready_core() -> tuple[InferenceCore, CountingEngine]:
    engine = CountingEngine()
    core = InferenceCore(engine, RequestLimits("m", 64, 4, 0.8, 0.95), SlotPool(1))
    core.mark_ready(engine.load())
    return core, engine


async def collect(core: InferenceCore) -> list[str]:
    async with aclosing(core.generate(GenerationRequest(prompt="x"))) as chunks:
        return [chunk.text async for chunk in chunks]


def test_an_idle_model_unloads_and_the_next_request_loads_it_again() -> None:
    async def scenario() -> None:
        core, engine = ready_core()
        engine.release.set()
        assert (await core.unload()).state is ModelState.UNLOADED and engine.closes == 1
        assert await core.unload() and engine.closes == 1  # unloading twice frees once
        assert await collect(core) == ["hi"]
        assert core.state is ModelState.READY and engine.loads == 2

    asyncio.run(scenario())


def test_a_model_with_a_request_running_is_not_unloaded() -> None:
    async def scenario() -> None:
        core, engine = ready_core()
        running = asyncio.create_task(collect(core))
        await engine.generating.wait()
        with pytest.raises(MeshError) as refused:
            await core.unload()
        assert refused.value.kind is ErrorKind.FAILED_PRECONDITION and refused.value.reason == "MODEL_BUSY"
        engine.release.set()
        assert await running == ["hi"] and engine.closes == 0

    asyncio.run(scenario())


def test_requests_arriving_during_an_unload_wait_for_the_reload_instead_of_failing() -> None:
    async def scenario() -> None:
        core, engine = ready_core()
        engine.release.set()
        unloading = asyncio.create_task(core.unload())
        arriving = asyncio.create_task(collect(core))
        await unloading
        assert await arriving == ["hi"] and engine.loads == 2 and core.state is ModelState.READY

    asyncio.run(scenario())


def test_running_out_of_memory_while_loading_again_is_a_typed_refusal() -> None:
    async def scenario() -> None:
        core, engine = ready_core()
        await core.unload()

        def no_memory() -> ModelMetadata:
            raise MemoryError

        engine.load = no_memory
        with pytest.raises(MeshError) as refused:
            await core.load()
        assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED and refused.value.reason == "ENGINE_OUT_OF_MEMORY"
        assert core.state is ModelState.UNLOADED

    asyncio.run(scenario())
