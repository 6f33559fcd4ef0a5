"""The batched llama.cpp engine, on the real model: concurrent requests share decode steps, a request's text
is the same batched as alone for the same seed, a cancel clears its cells within one step, a full cache
refuses with a typed error, and a context too large to allocate is an out-of-memory error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.inference.engines.llama_cpp import LlamaCppEngine
from services.shared.domain import GenerationChunk, GenerationRequest, SamplingParams
from services.shared.errors import ErrorKind, MeshError
from services.shared.mesh_config import load_mesh_config
from tests.support import write_model_config

# Longer than one step's token budget below, so that it is read in chunks while the others decode.
LONG_PROMPT = "The lighthouse keeper counted the ships that passed the rocks each night. " * 12
REQUESTS = [
    GenerationRequest(
        SamplingParams(max_tokens=20, temperature=0.0, top_p=1.0, seed=1), prompt="The capital of France is"
    ),
    GenerationRequest(SamplingParams(max_tokens=20, temperature=0.9, top_p=0.9, seed=42), prompt="Once upon a time,"),
    GenerationRequest(
        SamplingParams(max_tokens=20, temperature=0.7, top_p=0.95, seed=7, frequency_penalty=0.5), prompt="def fib(n):"
    ),
    GenerationRequest(SamplingParams(max_tokens=20, temperature=0.8, top_p=0.95, seed=3), prompt=LONG_PROMPT),
]


async def engine_with(directory: Path, slots: int, **extra: object) -> AsyncIterator[LlamaCppEngine]:
    config = load_mesh_config(write_model_config(directory, context_length=1024, slots=slots, **extra)).models[0]
    engine = LlamaCppEngine(config)
    engine.load()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[LlamaCppEngine]:
    async for loaded in engine_with(tmp_path, slots=4, batch_tokens=64):
        yield loaded


async def chunks_of(engine: LlamaCppEngine, request: GenerationRequest) -> list[GenerationChunk]:
    prepared = await engine.prepare(request)
    return [chunk async for chunk in engine.generate(request, prepared)]


def text_and_tokens(chunks: list[GenerationChunk]) -> tuple[str, list[int]]:
    return "".join(chunk.text for chunk in chunks), [token for chunk in chunks for token in chunk.token_ids]


async def test_concurrent_requests_share_decode_steps(engine: LlamaCppEngine) -> None:
    before = engine.batch_report()
    results = await asyncio.gather(*(chunks_of(engine, request) for request in REQUESTS))
    after = engine.batch_report()
    assert all(chunks[-1].usage.output_tokens == 20 for chunks in results)
    steps = after.steps - before.steps
    carried = after.sequence_steps - before.sequence_steps
    # 80 sampled tokens and a chunked prompt took fewer steps than tokens: the steps carried several
    # sequences at once, by the engine's own count.
    assert after.most_sequences_in_a_step > 1
    assert carried > steps
    assert steps < 80
    assert after.running == 0 and after.cells_in_use == 0


async def test_the_same_seed_gives_the_same_text_batched_as_alone(engine: LlamaCppEngine) -> None:
    # Alone: each request by itself, nothing else in its steps.
    alone = [text_and_tokens(await chunks_of(engine, request)) for request in REQUESTS]
    # Batched: all four at once, the long prompt read in chunks between the others' tokens.
    batched = [text_and_tokens(chunks) for chunks in await asyncio.gather(*(chunks_of(engine, r) for r in REQUESTS))]
    assert engine.batch_report().most_sequences_in_a_step > 1
    for (alone_text, alone_tokens), (batched_text, batched_tokens) in zip(alone, batched, strict=True):
        assert alone_tokens and alone_text
        assert batched_tokens == alone_tokens
        assert batched_text == alone_text
    # Greedy and sampled alike, and the sampled ones really sampled: a different seed, a different text.
    other_seed = GenerationRequest(
        SamplingParams(max_tokens=20, temperature=0.9, top_p=0.9, seed=43), prompt="Once upon a time,"
    )
    assert text_and_tokens(await chunks_of(engine, other_seed))[1] != alone[1][1]


async def test_a_cancelled_request_frees_its_cells_within_one_step(engine: LlamaCppEngine) -> None:
    keeper = GenerationRequest(SamplingParams(max_tokens=200, temperature=0.0, top_p=1.0), prompt="Count to a hundred:")
    cancelled = GenerationRequest(
        SamplingParams(max_tokens=200, temperature=0.0, top_p=1.0), prompt="List every colour:"
    )
    keeping = asyncio.create_task(chunks_of(engine, keeper))
    prepared = await engine.prepare(cancelled)
    stream = engine.generate(cancelled, prepared)
    received = [await anext(stream) for _ in range(5)]
    assert all(chunk.finish_reason is None for chunk in received)
    assert engine.activity().running_requests == 2
    await stream.aclose()  # returns once the engine has cleared the sequence

    left = engine.batch_report().last_cancelled
    assert left is not None
    assert left.positions_before >= len(prepared.token_ids) + 4
    assert left.positions_after == 0
    assert left.cleared_at_step - left.cancelled_at_step <= 1
    # The other sequence went on, and the engine counts only its cells as in use.
    assert engine.activity().running_requests == 1
    assert not keeping.done()
    keeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await keeping
    assert engine.activity().kv_cache_used_bytes == 0


async def test_a_full_cache_refuses_a_new_sequence_with_a_typed_error_and_serves_on(tmp_path: Path) -> None:
    long = GenerationRequest(SamplingParams(max_tokens=500, temperature=0.0, top_p=1.0), prompt="Count to a thousand:")
    short = GenerationRequest(SamplingParams(max_tokens=4, temperature=0.0, top_p=1.0), prompt="Hello")
    async for engine in engine_with(tmp_path, slots=1):
        prepared = await engine.prepare(long)
        stream = engine.generate(long, prepared)
        await anext(stream)
        with pytest.raises(MeshError) as refused:
            await chunks_of(engine, short)
        assert (refused.value.kind, refused.value.reason) == (ErrorKind.RESOURCE_EXHAUSTED, "KV_CACHE_FULL")
        assert refused.value.retry_after_seconds is not None
        await stream.aclose()
        assert (await chunks_of(engine, short))[-1].usage.output_tokens == 4


def test_a_context_too_large_to_allocate_is_an_out_of_memory_error(tmp_path: Path) -> None:
    # 64 sequences of 131,072 tokens: about 150 GiB of KV cache, far past this machine's memory.
    config = load_mesh_config(write_model_config(tmp_path, context_length=131_072, slots=64)).models[0]
    with pytest.raises(MemoryError, match="could not allocate"):
        LlamaCppEngine(config).load()
