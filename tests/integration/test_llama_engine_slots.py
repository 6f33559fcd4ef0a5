"""How the per-slot llama.cpp engine uses its contexts: a cancelled generation stops computing at once and leaves its
context fit for the next request, and a prompt goes to the context that already holds its start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import llama_cpp
import pytest

from services.inference.engines.llama_cpp_per_slot import PerSlotLlamaCppEngine
from services.shared.domain import GenerationRequest, SamplingParams
from services.shared.mesh_config import load_mesh_config
from tests.support import write_model_config

# About 1,700 tokens: reading it takes seconds on a CPU, far longer than a cancel takes to arrive.
LONG_PROMPT = "The lighthouse keeper counted the ships that passed the rocks each night. " * 120
SHORT = GenerationRequest(SamplingParams(max_tokens=12, temperature=0.0, top_p=1.0, seed=7), prompt="Name a colour:")


async def text_of(engine: PerSlotLlamaCppEngine, request: GenerationRequest) -> str:
    prepared = await engine.prepare(request)
    return "".join([chunk.text async for chunk in engine.generate(request, prepared)])


async def wait_for_a_running_request(engine: PerSlotLlamaCppEngine) -> None:
    async with asyncio.timeout(60):
        while engine.activity().running_requests == 0:
            await asyncio.sleep(0.001)


async def engine_with(directory: Path, slots: int) -> AsyncIterator[PerSlotLlamaCppEngine]:
    config = load_mesh_config(write_model_config(directory, context_length=2048, slots=slots)).models[0]
    engine = PerSlotLlamaCppEngine(config)
    engine.load()
    yield engine
    await engine.close()


@pytest.fixture
async def one_slot_engine(tmp_path: Path) -> AsyncIterator[PerSlotLlamaCppEngine]:
    async for engine in engine_with(tmp_path, slots=1):
        yield engine


@pytest.fixture
async def two_slot_engine(tmp_path: Path) -> AsyncIterator[PerSlotLlamaCppEngine]:
    async for engine in engine_with(tmp_path, slots=2):
        yield engine


def tokens_decoded(engine: PerSlotLlamaCppEngine) -> int:
    """Every token the engine's contexts have run through the model so far, prompts and completions."""
    totals = [llama_cpp.llama_perf_context(slot.llm.ctx) for slot in engine._slots]
    return sum(total.n_p_eval + total.n_eval for total in totals)


async def test_a_cancelled_prompt_is_not_read_to_its_end_and_the_context_serves_on(one_slot_engine) -> None:
    engine = one_slot_engine
    expected = await text_of(engine, SHORT)
    (context,) = [slot.llm for slot in engine._slots]  # the one context: how far it read the prompt
    long = GenerationRequest(SamplingParams(max_tokens=4, temperature=0.0, top_p=1.0), prompt=LONG_PROMPT)
    prepared = await engine.prepare(long)
    assert len(prepared.token_ids) > 1500

    reading = asyncio.create_task(text_of(engine, long))
    await wait_for_a_running_request(engine)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading

    (slot,) = engine._slots
    await asyncio.wrap_future(slot.worker.submit(lambda: None))  # behind the aborted decode and its cleanup
    assert context.n_tokens < len(prepared.token_ids)
    # The aborted decode's cells are gone: the next request reads exactly what it would on a fresh context.
    assert await text_of(engine, SHORT) == expected


async def test_a_prompt_that_comes_back_is_read_from_the_context_that_holds_it(two_slot_engine) -> None:
    engine = two_slot_engine
    template = "You are a careful assistant. Answer in one short sentence. Question: "
    interactive = GenerationRequest(SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0), prompt=template + "why?")
    background = GenerationRequest(
        SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0), prompt="Write one sentence about the number 7."
    )
    prompt_length = len((await engine.prepare(interactive)).token_ids)
    assert prompt_length > 10

    for request in (interactive, background, background):
        await text_of(engine, request)
    before = tokens_decoded(engine)
    await text_of(engine, interactive)
    # The background prompt ran last, on the other context (the one that held it): this prompt is found
    # where it was left and only its last token is read again.
    assert tokens_decoded(engine) - before < prompt_length / 2
