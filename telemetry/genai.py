"""OpenTelemetry GenAI semantic-convention attributes, so generation spans read the same in any backend."""

from __future__ import annotations

from typing import Any

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"


def operation_name(is_chat: bool) -> str:
    return "chat" if is_chat else "text_completion"


def request_attributes(
    operation: str, provider: str, model: str, max_tokens: int | None, temperature: float | None, top_p: float | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {OPERATION: operation, PROVIDER: provider, REQUEST_MODEL: model}
    for name, value in (("max_tokens", max_tokens), ("temperature", temperature), ("top_p", top_p)):
        if value is not None:
            attributes[f"gen_ai.request.{name}"] = value
    return attributes


def response_attributes(model: str, finish_reason: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        RESPONSE_MODEL: model,
        FINISH_REASONS: [finish_reason],
        INPUT_TOKENS: input_tokens,
        OUTPUT_TOKENS: output_tokens,
    }
