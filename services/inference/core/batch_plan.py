"""Continuous batching, as plain logic: which tokens of which sequences go into each decode step.

One context holds every sequence's KV cache, each under its own sequence id, and one decode per step runs
them all, as llama-server's slots do. Each step:
- every sequence that is generating contributes the one token it sampled last;
- prompts still being read fill what is left of the step's token budget (n_batch), oldest first, a chunk
  each, so a long prompt is read over several steps while the others go on decoding;
- a sequence whose prompt ends in this step asks for the logits of its last token, to sample its first.

A sequence is admitted only with a free sequence id and KV cells for its whole prompt and all the tokens it
may generate, reserved at once: a running sequence never finds the cache full. One that cannot be admitted
is refused with a typed error, never left to fail mid-stream. A finished or cancelled sequence gives its
id and cells back at once.

No llama.cpp here: the engine turns each planned chunk into entries of a llama_batch.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from services.shared.errors import MeshError, resource_exhausted

# A refused sequence may ask again once others finish: about as long as a short generation takes.
_RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True)
class Chunk:
    """Tokens [start, start + count) of one sequence, at those positions, in this step's batch."""

    seq_id: int
    start: int
    count: int
    # Whether the step must keep the logits of this chunk's last token: it is sampled from after the step.
    wants_logits: bool


@dataclass
class _Sequence:
    seq_id: int
    prompt_tokens: int
    max_tokens: int
    read: int = 0
    sampled: int = 0
    # Sampled tokens already decoded into the cache; the last sampled one is decoded in the next step.
    decoded: int = 0

    @property
    def cells(self) -> int:
        return self.prompt_tokens + self.max_tokens

    @property
    def reading(self) -> bool:
        return self.read < self.prompt_tokens


@dataclass(frozen=True)
class StepCounters:
    """The planner's own account of the steps it planned, for the engine's metrics and tests."""

    steps: int
    most_sequences_in_a_step: int
    tokens_planned: int


class BatchPlanner:
    def __init__(self, n_batch: int, n_seq_max: int, kv_cells: int) -> None:
        if n_batch < 1 or n_seq_max < 1 or kv_cells < 1:
            raise ValueError("a batch, a sequence and a KV cell at least")
        self._n_batch = n_batch
        self._n_seq_max = n_seq_max
        self._kv_cells = kv_cells
        # In order of admission: the oldest prompt is read first.
        self._sequences: OrderedDict[int, _Sequence] = OrderedDict()
        self._steps = 0
        self._most_in_a_step = 0
        self._tokens = 0

    @property
    def reserved_cells(self) -> int:
        return sum(sequence.cells for sequence in self._sequences.values())

    @property
    def running(self) -> int:
        return len(self._sequences)

    def counters(self) -> StepCounters:
        return StepCounters(self._steps, self._most_in_a_step, self._tokens)

    def admit(self, prompt_tokens: int, max_tokens: int) -> int:
        """A sequence id for a new request, its KV cells reserved; raises KV_CACHE_FULL or NO_SEQUENCE_FREE."""
        if prompt_tokens < 1 or max_tokens < 1:
            raise ValueError("a sequence reads at least one token and may generate at least one")
        needed = prompt_tokens + max_tokens
        if needed > self._kv_cells:
            raise _refusal("KV_CACHE_TOO_SMALL", f"{needed} KV cells are more than the context's {self._kv_cells}")
        if len(self._sequences) >= self._n_seq_max:
            raise _refusal("NO_SEQUENCE_FREE", f"all {self._n_seq_max} sequences of the context are running")
        free = self._kv_cells - self.reserved_cells
        if needed > free:
            raise _refusal("KV_CACHE_FULL", f"{needed} KV cells needed, {free} free")
        seq_id = min(set(range(self._n_seq_max)) - set(self._sequences))
        self._sequences[seq_id] = _Sequence(seq_id, prompt_tokens, max_tokens)
        return seq_id

    def plan(self) -> list[Chunk]:
        """The next step's chunks: every generating sequence's token first, then prompts in the budget left."""
        chunks, budget = [], self._n_batch
        for sequence in self._sequences.values():
            if not sequence.reading and sequence.sampled > sequence.decoded and budget > 0:
                chunks.append(Chunk(sequence.seq_id, sequence.prompt_tokens + sequence.decoded, 1, True))
                budget -= 1
        for sequence in self._sequences.values():
            if sequence.reading and budget > 0:
                count = min(budget, sequence.prompt_tokens - sequence.read)
                ends_prompt = sequence.read + count == sequence.prompt_tokens
                chunks.append(Chunk(sequence.seq_id, sequence.read, count, ends_prompt))
                budget -= count
        if chunks:
            self._steps += 1
            self._most_in_a_step = max(self._most_in_a_step, len({chunk.seq_id for chunk in chunks}))
            self._tokens += self._n_batch - budget
        return chunks

    def decoded(self, chunks: list[Chunk]) -> None:
        """The step of `chunks` has run: their tokens are in the cache."""
        for chunk in chunks:
            sequence = self._sequences.get(chunk.seq_id)
            if sequence is None:
                continue  # finished or cancelled while the step ran: its cells are already cleared
            if sequence.reading:
                sequence.read += chunk.count
            else:
                sequence.decoded += 1

    def sampled(self, seq_id: int) -> bool:
        """A token was sampled for the sequence; whether it may still generate another."""
        sequence = self._sequences[seq_id]
        if sequence.reading or sequence.sampled > sequence.decoded:
            raise ValueError(f"sequence {seq_id} has no logits to sample from yet")
        sequence.sampled += 1
        return sequence.sampled < sequence.max_tokens

    def finish(self, seq_id: int) -> None:
        """The sequence ended (finished, stopped or cancelled): its id and cells are free for the next."""
        self._sequences.pop(seq_id, None)


def _refusal(reason: str, message: str) -> MeshError:
    return resource_exhausted(reason, message, retry_after_seconds=_RETRY_AFTER_SECONDS)
