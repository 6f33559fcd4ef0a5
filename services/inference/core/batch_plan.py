"""Continuous batching, as plain logic: which tokens of which sequences go into each decode step.

One context holds every sequence's KV cache, each under its own sequence id, and one decode per step runs
them all, as llama-server's slots do. Each step:
- every sequence that is generating contributes the one token it sampled last;
- the oldest prompt still being read adds its next chunk, so a long prompt is read over several steps
  while the others go on decoding;
- a sequence whose prompt ends in this step asks for the logits of its last token, to sample its first.

The KV values llama.cpp computes for a prompt token depend on which tokens are read with it, so that a
request's cells, logits and text are the same batched as alone:
- a prompt's chunks span fixed positions, [0, C), [C, 2C), ..., whatever else the step carries, with
  C = n_batch - n_seq_max + 1, which leaves room for a token of every other sequence;
- a step reads one prompt chunk at most: llama.cpp computes two sequences' chunks of one step together,
  with arithmetic that differs from each read alone. Sequences' single decode tokens do not interfere.

Each sequence id owns a fixed share of the cache (cells_per_sequence), so a sequence is admitted only with
a free id, and only if its prompt and every token it may generate fit in that share: a running sequence
never finds its cells full. One that cannot be admitted is refused with a typed error, never left to fail
mid-stream. A finished sequence gives its id back at once.

An id keeps the prompt cells of the request that last finished on it, as a llama-server slot keeps its
prompt cache: a new prompt goes to the free id whose cells hold the longest start of it, and only the rest
is read. Only whole chunks are reused, those the new prompt would have read the same way itself; generated
tokens, decoded one at a time, never are. A cancelled sequence's cells are cleared instead.

No llama.cpp here: the engine turns each planned chunk into entries of a llama_batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from services.shared.errors import MeshError, resource_exhausted

# A refused sequence may ask again once others finish: about as long as a short generation takes.
_RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True)
class Chunk:
    """Tokens [start, start + count) of one sequence, at those positions, in this step's batch.

    While the sequence reads its prompt these are prompt tokens; once it generates, the one token at
    `start` is the one it sampled last.
    """

    seq_id: int
    start: int
    count: int
    # Whether the step must keep the logits of this chunk's last token: it is sampled from after the step.
    wants_logits: bool


@dataclass(frozen=True)
class Admission:
    seq_id: int
    # Prompt tokens the id's cells already hold, from the request that finished on it last; reading starts
    # here, and the engine clears the id's cells from here on before its first chunk.
    reused: int


@dataclass
class _Sequence:
    seq_id: int
    prompt: tuple[int, ...]
    max_tokens: int
    read: int
    sampled: int = 0
    # Sampled tokens already decoded into the cache; the last sampled one is decoded in the next step.
    decoded: int = 0

    @property
    def reading(self) -> bool:
        return self.read < len(self.prompt)


@dataclass(frozen=True)
class StepCounters:
    """The planner's own account of the steps it planned, for the engine's metrics and tests."""

    steps: int
    # Summed over steps: how many sequences each step carried.
    sequence_steps: int
    most_sequences_in_a_step: int
    tokens_planned: int


class BatchPlanner:
    def __init__(self, n_batch: int, n_seq_max: int, cells_per_sequence: int) -> None:
        if n_seq_max < 1 or n_batch < n_seq_max or cells_per_sequence < 2:
            raise ValueError("a sequence at least, a batch that holds a token of each, and cells for two tokens")
        self._n_batch = n_batch
        self._chunk = n_batch - n_seq_max + 1
        self._cells_per_sequence = cells_per_sequence
        # In order of admission: the oldest prompt is read first.
        self._running: OrderedDict[int, _Sequence] = OrderedDict()
        # Free ids and the prompt tokens their cells hold in whole chunks, least recently released first.
        self._free: OrderedDict[int, tuple[int, ...]] = OrderedDict((seq_id, ()) for seq_id in range(n_seq_max))
        self._steps = 0
        self._sequence_steps = 0
        self._most_in_a_step = 0
        self._tokens = 0

    @property
    def running(self) -> int:
        return len(self._running)

    def cells_in_use(self) -> int:
        """Cells the running sequences fill now: prompts read so far and the tokens decoded after them."""
        return sum(sequence.read + sequence.decoded for sequence in self._running.values())

    def counters(self) -> StepCounters:
        return StepCounters(self._steps, self._sequence_steps, self._most_in_a_step, self._tokens)

    def admit(self, prompt: Sequence[int], max_tokens: int) -> Admission:
        """An id for a new request, on which its whole length fits; raises KV_CACHE_TOO_SMALL or KV_CACHE_FULL."""
        if not prompt or max_tokens < 1:
            raise ValueError("a sequence reads at least one token and may generate at least one")
        needed = len(prompt) + max_tokens
        if needed > self._cells_per_sequence:
            raise _refusal(
                "KV_CACHE_TOO_SMALL", f"{needed} KV cells are more than a sequence's {self._cells_per_sequence}"
            )
        if not self._free:
            raise _refusal("KV_CACHE_FULL", f"all {len(self._running)} sequences of the KV cache are in use")
        seq_id, shared = self._best_free_id(tuple(prompt))
        del self._free[seq_id]
        # Whole chunks only, and at least the prompt's last token read again: its logits give the first token.
        reused = min(shared, len(prompt) - 1) // self._chunk * self._chunk
        self._running[seq_id] = _Sequence(seq_id, tuple(prompt), max_tokens, read=reused)
        return Admission(seq_id, reused)

    def plan(self) -> list[Chunk]:
        """The next step's chunks: every generating sequence's token, then the oldest prompt's next chunk."""
        chunks, budget = [], self._n_batch
        for sequence in self._running.values():
            if not sequence.reading and sequence.sampled > sequence.decoded and budget > 0:
                chunks.append(Chunk(sequence.seq_id, len(sequence.prompt) + sequence.decoded, 1, True))
                budget -= 1
        reading = next((sequence for sequence in self._running.values() if sequence.reading), None)
        if reading is not None:
            end = min(len(reading.prompt), (reading.read // self._chunk + 1) * self._chunk)
            chunks.append(Chunk(reading.seq_id, reading.read, end - reading.read, end == len(reading.prompt)))
            budget -= end - reading.read
        if chunks:
            carried = len({chunk.seq_id for chunk in chunks})
            self._steps += 1
            self._sequence_steps += carried
            self._most_in_a_step = max(self._most_in_a_step, carried)
            self._tokens += self._n_batch - budget
        return chunks

    def decoded(self, chunks: list[Chunk]) -> None:
        """The step of `chunks` has run: their tokens are in the cache."""
        for chunk in chunks:
            sequence = self._running.get(chunk.seq_id)
            if sequence is None:
                continue  # finished while the step ran
            if sequence.reading:
                sequence.read += chunk.count
            else:
                sequence.decoded += 1

    def sampled(self, seq_id: int) -> bool:
        """A token was sampled for the sequence; whether it may still generate another."""
        sequence = self._running[seq_id]
        if sequence.reading or sequence.sampled > sequence.decoded:
            raise ValueError(f"sequence {seq_id} has no logits to sample from yet")
        sequence.sampled += 1
        return sequence.sampled < sequence.max_tokens

    def finish(self, seq_id: int, keep_cells: bool = True) -> int:
        """The sequence ended: its id is free for the next. Returns how many of its cells to keep.

        The kept cells are the whole chunks of its prompt, for a next prompt that starts the same way; the
        engine clears the rest. A cancelled sequence passes keep_cells=False: all of them are cleared.
        """
        sequence = self._running.pop(seq_id, None)
        if sequence is None:
            return 0
        kept = sequence.read // self._chunk * self._chunk if keep_cells else 0
        self._free[seq_id] = sequence.prompt[:kept]
        return kept

    def _best_free_id(self, prompt: tuple[int, ...]) -> tuple[int, int]:
        """The free id whose cells hold the longest start of the prompt, with that length.

        Where none holds more than the first token, the least recently released id is taken, so that the
        most recent prompts stay cached.
        """
        shared, best = max(((_shared_prefix(held, prompt), seq_id) for seq_id, held in self._free.items()), key=_first)
        if shared <= 1:
            oldest = next(iter(self._free))
            return oldest, _shared_prefix(self._free[oldest], prompt)
        return best, shared


def _first(pair: tuple[int, int]) -> int:
    return pair[0]


def _shared_prefix(held: tuple[int, ...], prompt: tuple[int, ...]) -> int:
    length = 0
    for cached, wanted in zip(held, prompt, strict=False):
        if cached != wanted:
            break
        length += 1
    return length


def _refusal(reason: str, message: str) -> MeshError:
    return resource_exhausted(reason, message, retry_after_seconds=_RETRY_AFTER_SECONDS)
