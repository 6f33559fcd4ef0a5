"""From sampled tokens to streamed chunks, the same for both llama.cpp engines.

An engine hands over one TokenStep per sampled token, with the completion's bytes so far; this turns them
into chunks of text that is safe to send (whole characters, a possible stop sequence held back), ends at
the end of generation, a stop sequence or the token budget, and counts the usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from services.inference.core.text_stream import StreamingText
from services.shared.domain import FinishReason, GenerationChunk, GenerationRequest, TokenLogprob, Usage


@dataclass(frozen=True)
class TokenStep:
    token: int
    end_of_generation: bool
    completion_bytes: bytes
    logprob: TokenLogprob | None = None


def token_budget(request: GenerationRequest, prompt_tokens: int, context_length: int) -> int:
    """The most tokens the request may generate: what it asks for, within what the context has left."""
    return min(int(request.sampling.max_tokens), context_length - prompt_tokens)


async def stream_completion(
    request: GenerationRequest, prompt_tokens: int, budget: int, next_step: Callable[[], Awaitable[TokenStep | None]]
) -> AsyncIterator[GenerationChunk]:
    """Streams chunks from next_step(), which returns None once the engine has nothing more to give."""
    text = StreamingText(request.sampling.stop)
    finish, stopped_by_sequence = FinishReason.LENGTH, False
    generated = 0
    pending_ids: list[int] = []
    pending_logprobs: list[TokenLogprob] = []
    completion_bytes = b""
    while generated < budget:
        step = await next_step()
        if step is None or step.end_of_generation:
            finish = FinishReason.STOP
            break
        generated += 1
        pending_ids.append(step.token)
        if step.logprob is not None:
            pending_logprobs.append(step.logprob)
        completion_bytes = step.completion_bytes
        piece = text.update(completion_bytes)
        if piece.stopped:
            finish, stopped_by_sequence = FinishReason.STOP, True
            yield GenerationChunk(piece.text, tuple(pending_ids), logprobs=tuple(pending_logprobs))
            pending_ids, pending_logprobs = [], []
            break
        if piece.text:
            yield GenerationChunk(piece.text, tuple(pending_ids), logprobs=tuple(pending_logprobs))
            pending_ids, pending_logprobs = [], []
    rest = "" if stopped_by_sequence else text.finish(completion_bytes)
    yield GenerationChunk(rest, tuple(pending_ids), finish, Usage(prompt_tokens, generated), tuple(pending_logprobs))
