"""The simulated engine the relay benchmark drives the mesh with: it gives exactly the tokens asked for, hands a
reader that fell behind what built up in one chunk, and lets a closed stream go at once."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from services.inference.engines.simulated import TOKEN_TEXT, SimulatedEngine
from services.shared.domain import FinishReason, GenerationChunk, GenerationRequest, SamplingParams
from services.shared.mesh_config import MeshConfig
from tests.support import until


def simulated(**options: object) -> SimulatedEngine:
    config = MeshConfig.model_validate(
        {"models": [{"name": "sim", "engine": "simulated", "simulated": {"tokens_per_second": 2000.0, **options}}]}
    )
    engine = SimulatedEngine(config.models[0])
    engine.load()
    return engine


async def generated(engine: SimulatedEngine, max_tokens: int) -> list[GenerationChunk]:
    request = GenerationRequest(SamplingParams(max_tokens=max_tokens), prompt="Count to ten, please")
    prompt = await engine.prepare(request)
    return [chunk async for chunk in engine.generate(request, prompt)]


async def test_a_stream_has_exactly_the_tokens_asked_for_and_usage_on_its_last_chunk() -> None:
    chunks = await generated(simulated(), 25)
    assert sum(len(chunk.token_ids) for chunk in chunks) == 25
    assert "".join(chunk.text for chunk in chunks) == TOKEN_TEXT * 25
    last = chunks[-1]
    assert last.finish_reason is FinishReason.LENGTH
    assert last.usage is not None and (last.usage.input_tokens, last.usage.output_tokens) == (5, 25)
    assert all(chunk.finish_reason is None for chunk in chunks[:-1])


async def test_a_reader_that_falls_behind_gets_what_built_up_in_one_chunk() -> None:
    engine = simulated()
    request = GenerationRequest(SamplingParams(max_tokens=500), prompt="Go")
    stream = engine.generate(request, await engine.prepare(request))
    first = await anext(stream)
    await until(lambda: engine.tokens_given() >= len(first.token_ids) + 10, "ten tokens built up")
    behind = await anext(stream)
    assert len(behind.token_ids) >= 10
    assert behind.text == TOKEN_TEXT * len(behind.token_ids)
    await stream.aclose()


async def test_a_closed_stream_leaves_the_engine_at_once() -> None:
    engine = simulated()
    request = GenerationRequest(SamplingParams(max_tokens=10_000), prompt="Go")
    stream = engine.generate(request, await engine.prepare(request))
    await anext(stream)
    assert engine.activity().running_requests == 1
    await stream.aclose()
    assert engine.activity().running_requests == 0
    assert engine.activity().kv_cache_used_bytes == 0
    await engine.close()


async def test_running_sequences_share_each_step() -> None:
    engine = simulated()
    streams = await asyncio.gather(*(generated(engine, 40) for _ in range(8)))
    assert [sum(len(chunk.token_ids) for chunk in chunks) for chunks in streams] == [40] * 8
    # Each step gives a token to every running sequence, as a batching engine decodes them.
    assert engine.tokens_given() == 320
    assert engine.steps_taken() < 320 / 2


def test_a_simulated_model_reads_no_model_and_runs_256_sequences_by_default() -> None:
    config = MeshConfig.model_validate({"models": [{"name": "sim", "engine": "simulated"}]})
    assert config.models[0].slots == 256
    with pytest.raises(ValidationError, match="reads no model"):
        MeshConfig.model_validate({"models": [{"name": "sim", "engine": "simulated", "path": "/m.gguf"}]})
    with pytest.raises(ValidationError):
        MeshConfig.model_validate(
            {"models": [{"name": "sim", "engine": "simulated", "simulated": {"tokens_per_second": 0}}]}
        )
