"""The batched llama.cpp engine's step loop: one thread, one context, one decode per step for every sequence.

The thread owns the context, its batch and every admitted sequence's sampler. The event loop reaches it
through three calls only, each under one lock that the thread holds between decodes and never across one:
admit (refused at once with a typed error when the cache has no room), cancel, and report. Tokens go back
through each sequence's own deliver(), which hands them to the event loop.

Each step:
1. cancelled sequences leave, and their cells are cleared, so a cancel frees its cells within one step;
2. the planner picks the step's tokens (every generating sequence's last token, then prompt chunks);
3. one llama_decode runs them all;
4. every sequence whose logits came back samples its next token from its own row, with its own sampler;
   one that reached its end of generation or its budget leaves at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp import Llama
from llama_cpp._internals import LlamaSampler

from services.inference.core.batch_plan import Admission, BatchPlanner, Chunk
from services.inference.engines.llama_sampling import sampler_for
from services.inference.engines.llama_stream import TokenStep
from services.inference.engines.llama_tokens import SpecialTokens, logits_at, token_logprob
from services.shared.domain import SamplingParams
from services.shared.errors import MeshError, resource_exhausted, unavailable

log = logging.getLogger(__name__)

# What the event loop receives for a sequence: a token, a typed failure, or None once it has ended.
Delivery = TokenStep | MeshError | None
# A failed step may well succeed again at once: the caller may retry, here or on another endpoint.
_RETRY_AFTER_FAILED_STEP_SECONDS = 1.0


@dataclass(eq=False)
class SequenceRun:
    """One request in the batch. The event loop makes it; once admitted, only the step thread touches it."""

    prompt: tuple[int, ...]
    budget: int
    sampling: SamplingParams
    seed: int
    deliver: Callable[[Delivery], None]
    admission: Admission | None = None
    sampler: LlamaSampler | None = None
    completion: list[int] = field(default_factory=list)
    # The completion less the special tokens that are kept out of its text.
    visible: list[int] = field(default_factory=list)
    cancelled_at_step: int | None = None


@dataclass(frozen=True)
class CancelledSequence:
    """When a cancelled sequence asked to leave and when its cells were cleared, in steps, and the positions
    llama.cpp's cache held for it just before and just after."""

    seq_id: int
    cancelled_at_step: int
    cleared_at_step: int
    positions_before: int
    positions_after: int


@dataclass(frozen=True)
class BatchReport:
    """The step loop's own account: steps run, sequences carried, and the cells its sequences fill."""

    steps: int
    sequence_steps: int
    most_sequences_in_a_step: int
    running: int
    cells_in_use: int
    last_cancelled: CancelledSequence | None


@dataclass(frozen=True)
class _Sampled:
    run: SequenceRun
    step: TokenStep


class StepLoop:
    def __init__(
        self,
        ctx: llama_cpp.llama_context_p,
        vocabulary: Llama,
        planner: BatchPlanner,
        n_batch: int,
        on_step: Callable[[int], None] = lambda sequences: None,
    ) -> None:
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._vocabulary = vocabulary
        self._vocab = vocabulary._model.vocab
        self._n_vocab = vocabulary.n_vocab()
        self._special = SpecialTokens(vocabulary)
        self._planner = planner
        self._on_step = on_step
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._changed = threading.Condition()
        self._runs: dict[int, SequenceRun] = {}
        self._cancelled: list[SequenceRun] = []
        self._last_cancelled: CancelledSequence | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llama-steps", daemon=True)
        self._thread.start()

    def admit(self, run: SequenceRun) -> None:
        """Gives the run a sequence id and a place in the next step; raises KV_CACHE_FULL or KV_CACHE_TOO_SMALL."""
        with self._changed:
            run.admission = self._planner.admit(run.prompt, run.budget)
            self._runs[run.admission.seq_id] = run
            self._changed.notify()

    def cancel(self, run: SequenceRun) -> bool:
        """The run's reader is gone: it leaves before the next step, and is then delivered None.

        Returns whether it was still running; one that already ended is left alone.
        """
        with self._changed:
            if run.admission is None or self._runs.get(run.admission.seq_id) is not run:
                return False
            run.cancelled_at_step = self._planner.counters().steps
            self._cancelled.append(run)
            self._changed.notify()
            return True

    def report(self) -> BatchReport:
        with self._changed:
            counters = self._planner.counters()
            return BatchReport(
                counters.steps,
                counters.sequence_steps,
                counters.most_sequences_in_a_step,
                self._planner.running,
                self._planner.cells_in_use(),
                self._last_cancelled,
            )

    def close(self) -> None:
        """Ends the loop after the step in flight; every run still in it is told it ended."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()
        for run in self._runs.values():
            run.deliver(unavailable("SHUTTING_DOWN", "the model is being unloaded"))
        self._runs.clear()
        llama_cpp.llama_batch_free(self._batch)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not (self._closing or self._cancelled or self._planner.running):
                    self._changed.wait()
                if self._closing:
                    return
                self._clear_cancelled()
                chunks = self._planner.plan()
                runs = {chunk.seq_id: self._runs[chunk.seq_id] for chunk in chunks}
            if chunks:
                self._step(chunks, runs)

    def _step(self, chunks: list[Chunk], runs: dict[int, SequenceRun]) -> None:
        try:
            outputs = self._decode(chunks, runs)
            sampled = [self._sample(runs[chunk.seq_id], output) for chunk, output in outputs]
        except Exception as error:  # a failed step fails its sequences, never the engine
            log.exception("a decode step failed; ending its %d sequences", len(runs))
            self._fail(runs, error)
            return
        with self._changed:
            self._planner.decoded(chunks)
            for result in sampled:
                self._went_on(result)
        self._on_step(len(runs))

    def _decode(self, chunks: list[Chunk], runs: dict[int, SequenceRun]) -> list[tuple[Chunk, int]]:
        """Fills the batch with the step's tokens and decodes it; returns each logits-wanting chunk's output row."""
        batch = self._batch
        batch.n_tokens = 0
        outputs = []
        # In sequence-id order: llama.cpp splits a batch whose sequences come out of order into several
        # micro-batches, each a pass through the whole model (about 1.7 times the step's time at 4).
        for chunk in sorted(chunks, key=_seq_id_of):
            run = runs[chunk.seq_id]
            if run.sampler is None:
                self._start(run)
            for position in range(chunk.start, chunk.start + chunk.count):
                token = run.prompt[position] if position < len(run.prompt) else run.completion[-1]
                row = batch.n_tokens
                batch.token[row], batch.pos[row] = token, position
                batch.n_seq_id[row], batch.seq_id[row][0] = 1, chunk.seq_id
                batch.logits[row] = chunk.wants_logits and position == chunk.start + chunk.count - 1
                batch.n_tokens += 1
            if chunk.wants_logits:
                outputs.append((chunk, batch.n_tokens - 1))
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status == 1:
            raise resource_exhausted("KV_CACHE_FULL", "llama.cpp found no room in the KV cache for the step", 1.0)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        return outputs

    def _start(self, run: SequenceRun) -> None:
        """Before a sequence's first chunk: its id's cells past what it reuses are cleared, its sampler made."""
        assert run.admission is not None
        llama_cpp.llama_memory_seq_rm(self._memory, run.admission.seq_id, run.admission.reused, -1)
        run.sampler = sampler_for(run.sampling, run.seed, self._n_vocab)

    def _sample(self, run: SequenceRun, output: int) -> _Sampled:
        assert run.sampler is not None
        sampling = run.sampling
        token = llama_cpp.llama_sampler_sample(run.sampler.sampler, self._ctx, output)
        logprob = None
        if sampling.logprobs is not None:
            logits = logits_at(self._ctx, output, self._n_vocab)
            logprob = token_logprob(self._vocabulary, logits, token, sampling.logprobs)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return _Sampled(run, TokenStep(token, True, b"", logprob))
        run.completion.append(token)
        if not (sampling.skip_special_tokens and token in self._special):
            run.visible.append(token)
        text = self._vocabulary.detokenize(run.visible, special=not sampling.skip_special_tokens)
        return _Sampled(run, TokenStep(token, False, text, logprob))

    def _went_on(self, result: _Sampled) -> None:
        """Under the lock, after a step: the token goes out, and a sequence at its end leaves."""
        run, step = result.run, result.step
        assert run.admission is not None
        seq_id = run.admission.seq_id
        if self._runs.get(seq_id) is not run:
            return
        run.deliver(step)
        may_go_on = self._planner.sampled(seq_id)
        if step.end_of_generation or not may_go_on:
            # It leaves at once: its cells past the prompt cache it leaves for the next request are cleared.
            kept = self._planner.finish(seq_id)
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, kept, -1)
            del self._runs[seq_id]
            run.deliver(None)

    def _clear_cancelled(self) -> None:
        """Under the lock, between steps: each cancelled run leaves, and its cells are cleared."""
        steps = self._planner.counters().steps
        for run in self._cancelled:
            assert run.admission is not None and run.cancelled_at_step is not None
            seq_id = run.admission.seq_id
            if self._runs.get(seq_id) is not run:
                continue  # it ended on its own in the step that was running when it was cancelled
            self._planner.finish(seq_id, keep_cells=False)
            before = self._positions_held(seq_id)
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            del self._runs[seq_id]
            self._last_cancelled = CancelledSequence(
                seq_id, run.cancelled_at_step, steps, before, self._positions_held(seq_id)
            )
            run.deliver(None)
        self._cancelled.clear()

    def _positions_held(self, seq_id: int) -> int:
        """Positions 0..n-1 of the sequence that llama.cpp's cache holds (its highest position, plus one)."""
        return llama_cpp.llama_memory_seq_pos_max(self._memory, seq_id) + 1

    def _fail(self, runs: dict[int, SequenceRun], error: Exception) -> None:
        failure = (
            error
            if isinstance(error, MeshError)
            else unavailable(
                "ENGINE_STEP_FAILED", f"the engine could not run a step: {error}", _RETRY_AFTER_FAILED_STEP_SECONDS
            )
        )
        with self._changed:
            for seq_id, run in runs.items():
                if self._runs.get(seq_id) is not run:
                    continue
                self._planner.finish(seq_id, keep_cells=False)
                llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
                del self._runs[seq_id]
                run.deliver(failure)


def _seq_id_of(chunk: Chunk) -> int:
    return chunk.seq_id
