"""The checks of a generation request that need no knowledge of the model.

The gateway makes them before it queues a request, and the inference service again before it runs one,
so a bad request is refused at the door with the same reason it would get from the engine.
Every refusal is INVALID_ARGUMENT with a stable reason, so a caller can tell what to fix.
"""

from __future__ import annotations

import math

from services.shared.domain import GenerationRequest
from services.shared.errors import MeshError, invalid_argument

MAX_STOP_SEQUENCES = 8
MAX_STOP_SEQUENCE_CHARS = 256
MAX_TEMPERATURE = 2.0
MAX_PENALTY = 2.0
MAX_TOP_LOGPROBS = 20


def check_request_shape(request: GenerationRequest) -> None:
    """The checks that need no knowledge of the model, so a gateway can make them before queueing."""
    _check_input(request)
    sampling = request.sampling
    if sampling.max_tokens is not None and sampling.max_tokens < 1:
        raise out_of_range("INVALID_MAX_TOKENS", "max_tokens", sampling.max_tokens, "[1, context length)")
    if sampling.temperature is not None:
        check_temperature(sampling.temperature)
    if sampling.top_p is not None:
        check_top_p(sampling.top_p)
    for field in ("presence_penalty", "frequency_penalty"):
        penalty = getattr(sampling, field)
        if penalty is not None and not (math.isfinite(penalty) and -MAX_PENALTY <= penalty <= MAX_PENALTY):
            raise out_of_range(f"INVALID_{field.upper()}", field, penalty, f"[-{MAX_PENALTY}, {MAX_PENALTY}]")
    if sampling.logprobs is not None and not 0 <= sampling.logprobs <= MAX_TOP_LOGPROBS:
        raise out_of_range("INVALID_LOGPROBS", "logprobs", sampling.logprobs, f"[0, {MAX_TOP_LOGPROBS}]")
    _check_stops(sampling.stop)


def _check_input(request: GenerationRequest) -> None:
    if request.prompt and request.messages:
        raise invalid_argument("PROMPT_AND_MESSAGES", "set either prompt or messages, not both")
    if not request.prompt and not request.messages:
        raise invalid_argument("EMPTY_PROMPT", "the prompt is empty: set prompt or messages")
    if request.messages and not any(message.content for message in request.messages):
        raise invalid_argument("EMPTY_PROMPT", "every message is empty")


def check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
        raise out_of_range("INVALID_TEMPERATURE", "temperature", temperature, f"[0, {MAX_TEMPERATURE}]")


def check_top_p(top_p: float) -> None:
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise out_of_range("INVALID_TOP_P", "top_p", top_p, "(0, 1]")


def _check_stops(stops: tuple[str, ...]) -> None:
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid_argument("INVALID_STOP", f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed", field="stop")
    if any(not stop or len(stop) > MAX_STOP_SEQUENCE_CHARS for stop in stops):
        raise invalid_argument(
            "INVALID_STOP", f"each stop sequence must have 1 to {MAX_STOP_SEQUENCE_CHARS} characters", field="stop"
        )


def out_of_range(reason: str, field: str, value: float, allowed: str) -> MeshError:
    return invalid_argument(reason, f"{field} must be in {allowed}, got {value}", field=field, allowed=allowed)
