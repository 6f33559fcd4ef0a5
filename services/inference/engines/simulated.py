"""A simulated engine: tokens at a configured pace and time to first token, with no model behind them.

A benchmark tool, as llm-d-inference-sim is for vLLM: it lets the mesh be driven far past what any real
engine on the machine can generate, so that what limits a stream is the mesh itself (bench/relay.py). It
is never what a test shows a generation with.

It paces itself as a batching engine does. A sequence's first token comes `first_token_seconds` after it
arrives; from then on one step every 1 / `tokens_per_second` adds a token to every running sequence. The
pace is the wall clock's: a step that runs late, because the service's own work held the CPU, gives every
token due since the last, as an engine on a device of its own keeps generating whatever the host is doing.
A reader that falls behind finds what built up meanwhile in one chunk, as vLLM's output collector hands it
over, rather than a queue of single tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.inference.core.model import EngineActivity, ModelMetadata, PreparedPrompt
from services.shared.domain import FinishReason, GenerationChunk, GenerationRequest, Usage
from services.shared.mesh_config import ModelConfig

ENGINE_NAME = "simulated"
# The token every step adds: one word, so that text and token counts agree for a reader.
TOKEN_ID = 1
TOKEN_TEXT = " tok"
# A prompt's tokens, as the simulation counts them: about four bytes a token, as BPE vocabularies average.
_BYTES_PER_PROMPT_TOKEN = 4


class _Sequence:
    """One running request: the tokens it has been given and not yet read, and a wake-up for its reader."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.given = 0
        self.unread = 0
        self.decoding = False
        self.ready = asyncio.Event()

    def give(self, tokens: int = 1) -> int:
        """Up to `tokens` more, within the budget; says how many it gave."""
        given = min(tokens, self.budget - self.given)
        if given > 0:
            self.given += given
            self.unread += given
            self.ready.set()
        return max(0, given)

    def take(self) -> int:
        taken, self.unread = self.unread, 0
        self.ready.clear()
        return taken


class SimulatedEngine:
    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._options = config.simulated
        self._running: set[_Sequence] = set()
        self._stepping: asyncio.Task[None] | None = None
        self._steps = 0
        self._tokens = 0

    def load(self) -> ModelMetadata:
        per_slot = int(self._options.kv_cache_bytes_per_slot)
        return ModelMetadata(
            name=self._config.name,
            engine=ENGINE_NAME,
            context_length=self._config.context_length,
            slot_count=self._config.slots,
            weights_bytes=int(self._options.weights_bytes),
            kv_cache_bytes_per_slot=per_slot,
            memory_footprint_bytes=int(self._options.weights_bytes) + self._config.slots * per_slot,
        )

    async def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        text = request.prompt + "".join(message.content for message in request.messages)
        return PreparedPrompt(tuple([TOKEN_ID] * max(1, len(text.encode()) // _BYTES_PER_PROMPT_TOKEN)))

    async def generate(self, request: GenerationRequest, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        budget = min(int(request.sampling.max_tokens or 0), self._config.context_length - len(prompt.token_ids))
        sequence = _Sequence(max(0, budget))
        loop = asyncio.get_running_loop()
        first = loop.call_later(self._options.first_token_seconds, self._start_decoding, sequence)
        read = 0
        try:
            while read < sequence.budget:
                await sequence.ready.wait()
                taken = sequence.take()
                read += taken
                if read < sequence.budget:
                    yield GenerationChunk(TOKEN_TEXT * taken, (TOKEN_ID,) * taken)
                else:
                    yield _last(taken, len(prompt.token_ids), read)
                    return
            yield _last(0, len(prompt.token_ids), read)
        finally:
            first.cancel()
            self._running.discard(sequence)

    def activity(self) -> EngineActivity:
        per_slot = int(self._options.kv_cache_bytes_per_slot)
        return EngineActivity(len(self._running), 0, self._config.slots * per_slot, len(self._running) * per_slot)

    def steps_taken(self) -> int:
        """Steps so far: each gave a token to every sequence then running."""
        return self._steps

    def tokens_given(self) -> int:
        """Tokens generated so far, read or not."""
        return self._tokens

    async def close(self) -> None:
        if self._stepping is not None:
            self._stepping.cancel()
            self._stepping = None

    def _start_decoding(self, sequence: _Sequence) -> None:
        self._tokens += sequence.give()
        self._running.add(sequence)
        if self._stepping is None or self._stepping.done():
            self._stepping = asyncio.get_running_loop().create_task(self._step_while_running())

    async def _step_while_running(self) -> None:
        """A token to every running sequence per step, at the configured pace, while any is running."""
        interval = 1.0 / self._options.tokens_per_second
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while self._running:
            await asyncio.sleep(max(0.0, due - loop.time()))
            steps = 1 + int((loop.time() - due) / interval)
            due += steps * interval
            self._steps += steps
            for sequence in tuple(self._running):
                self._tokens += sequence.give(steps)


def _last(taken: int, prompt_tokens: int, generated: int) -> GenerationChunk:
    return GenerationChunk(
        TOKEN_TEXT * taken, (TOKEN_ID,) * taken, FinishReason.LENGTH, Usage(prompt_tokens, generated)
    )
