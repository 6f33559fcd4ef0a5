"""The inference generation span: GenAI attributes, phases, and prompts recorded only on request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.inference.observability import traced_generation
from services.shared.domain import FinishReason, GenerationChunk, GenerationRequest, SamplingParams, Usage

exporter = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)


async def two_tokens() -> AsyncIterator[GenerationChunk]:
    yield GenerationChunk("Hello", (1,))
    yield GenerationChunk(" there", (2,), FinishReason.LENGTH, Usage(4, 2))


async def run(record_content: bool) -> dict[str, object]:
    exporter.clear()
    request = GenerationRequest(SamplingParams(max_tokens=2, temperature=0.0), prompt="Say hi")
    async for _ in traced_generation(request, "m", two_tokens(), record_content):
        pass
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"text_completion m", "prompt_processing", "decode"}
    generation = spans["text_completion m"]
    assert spans["decode"].parent.span_id == generation.context.span_id
    assert [event.name for event in generation.events] == ["first_token"]
    return dict(generation.attributes)


async def test_the_generation_span_carries_the_genai_attributes() -> None:
    attributes = await run(record_content=False)
    assert attributes["gen_ai.request.max_tokens"] == 2 and attributes["gen_ai.request.temperature"] == 0.0
    assert attributes["gen_ai.usage.input_tokens"] == 4 and attributes["gen_ai.usage.output_tokens"] == 2
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert "gen_ai.input.messages" not in attributes and "gen_ai.output.messages" not in attributes


async def test_prompts_and_outputs_are_recorded_only_when_asked_for() -> None:
    attributes = await run(record_content=True)
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [{"role": "user", "content": "Say hi"}]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [{"role": "assistant", "content": "Hello there"}]
