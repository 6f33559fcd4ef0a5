"""The continuous-batching planner: admission by sequence ids and their share of the KV cache, one decode step
for every running sequence, long prompts read in chunks between the others' tokens, positions without gaps,
and a finished sequence's cells reused by the next prompt that starts the same way."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inference.core.batch_plan import Admission, BatchPlanner, Chunk
from services.shared.errors import ErrorKind, MeshError


def tokens(count: int, first: int = 1) -> tuple[int, ...]:
    return tuple(range(first, first + count))


def refusal_of(planner: BatchPlanner, prompt_tokens: int, max_tokens: int) -> MeshError:
    with pytest.raises(MeshError) as refused:
        planner.admit(tokens(prompt_tokens), max_tokens)
    return refused.value


def run_step(planner: BatchPlanner) -> list[Chunk]:
    """One step as the engine runs it: plan, decode, then sample wherever the step kept logits."""
    chunks = planner.plan()
    planner.decoded(chunks)
    for chunk in chunks:
        if chunk.wants_logits and not planner.sampled(chunk.seq_id):
            planner.finish(chunk.seq_id)
    return chunks


def test_a_sequence_is_admitted_on_a_free_id_and_gives_it_back_when_it_ends() -> None:
    planner = BatchPlanner(n_batch=64, n_seq_max=4, cells_per_sequence=100)
    assert planner.admit(tokens(10), 20) == Admission(0, 0)
    assert planner.admit(tokens(5, first=50), 5).seq_id == 1
    assert planner.running == 2
    planner.finish(0, keep_cells=False)
    assert planner.running == 1
    # Ids are taken least recently released first: the ones never used, then the freed one.
    assert [planner.admit(tokens(1, first=90 + n), 1).seq_id for n in range(3)] == [2, 3, 0]


def test_a_sequence_that_cannot_fit_is_refused_with_a_typed_error() -> None:
    planner = BatchPlanner(n_batch=64, n_seq_max=2, cells_per_sequence=100)
    too_long = refusal_of(planner, 90, 11)
    assert (too_long.kind, too_long.reason) == (ErrorKind.RESOURCE_EXHAUSTED, "KV_CACHE_TOO_SMALL")
    planner.admit(tokens(90), 10)
    planner.admit(tokens(1), 1)
    full = refusal_of(planner, 1, 1)
    assert (full.kind, full.reason) == (ErrorKind.RESOURCE_EXHAUSTED, "KV_CACHE_FULL")
    assert full.retry_after_seconds is not None


def test_a_prompt_goes_to_the_free_id_holding_its_longest_start_and_reads_only_the_whole_chunks_after() -> None:
    # Chunks of 4 tokens: 6 in a step, less a token for each of the other two sequences.
    planner = BatchPlanner(n_batch=6, n_seq_max=3, cells_per_sequence=100)
    system = tokens(9)
    conversation = planner.admit((*system, 100), 4)
    other = planner.admit(tokens(6, first=200), 4)
    finish_after_steps(planner)
    # The next turn shares 10 tokens with the first; of those, the id holds its two whole chunks, 0-8.
    next_turn = planner.admit((*system, 100, 300, 301, 302), 4)
    assert next_turn == Admission(conversation.seq_id, 8)
    assert planner.plan()[0] == Chunk(conversation.seq_id, 8, 4, False)
    assert other.seq_id != conversation.seq_id


def test_a_prompt_held_whole_reads_its_last_chunk_again_for_its_logits() -> None:
    planner = BatchPlanner(n_batch=4, n_seq_max=1, cells_per_sequence=100)
    planner.admit(tokens(8), 1)
    # The id keeps both whole chunks of the prompt; the engine clears the cells after them.
    assert finish_after_steps(planner) == {0: 8}
    # Chunks of 4: the prompt's last token, needed for its logits, is in the second chunk, read again.
    assert planner.admit(tokens(8), 1) == Admission(0, 4)
    assert planner.plan() == [Chunk(0, 4, 4, True)]


def test_a_step_reads_one_prompt_chunk_at_most() -> None:
    planner = BatchPlanner(n_batch=8, n_seq_max=3, cells_per_sequence=100)
    first, second = planner.admit(tokens(2), 4).seq_id, planner.admit(tokens(2, first=50), 4).seq_id
    # Both prompts would fit in the step's 8 tokens, but the second waits for the next step.
    first_step = planner.plan()
    assert first_step == [Chunk(first, 0, 2, True)]
    planner.decoded(first_step)
    planner.sampled(first)
    # Next step: the first's token, and the second's whole chunk.
    assert planner.plan() == [Chunk(first, 2, 1, True), Chunk(second, 0, 2, True)]


def test_a_cancelled_sequence_leaves_nothing_to_reuse() -> None:
    planner = BatchPlanner(n_batch=4, n_seq_max=1, cells_per_sequence=100)
    cancelled = planner.admit(tokens(9), 4)
    planner.decoded(planner.plan())
    assert planner.finish(cancelled.seq_id, keep_cells=False) == 0
    assert planner.admit(tokens(9), 4) == Admission(0, 0)


def finish_after_steps(planner: BatchPlanner) -> dict[int, int]:
    """Runs every sequence to the end of its tokens and finishes it; returns the cells each id keeps."""
    kept = {}
    while planner.running:
        chunks = planner.plan()
        planner.decoded(chunks)
        for chunk in chunks:
            if chunk.wants_logits and not planner.sampled(chunk.seq_id):
                kept[chunk.seq_id] = planner.finish(chunk.seq_id)
    return kept


def test_generating_sequences_decode_every_step_while_a_long_prompt_is_read_in_chunks() -> None:
    # Chunks of 8 - 2 + 1 = 7 tokens.
    planner = BatchPlanner(n_batch=8, n_seq_max=2, cells_per_sequence=1000)
    first = planner.admit(tokens(3), 10).seq_id
    run_step(planner)  # the short prompt, whole, and its first token sampled
    long = planner.admit(tokens(20, first=100), 10).seq_id
    steps = [run_step(planner) for _ in range(3)]
    for chunks in steps:
        # Every step decodes the running sequence's one token first, and keeps its logits.
        assert (chunks[0].seq_id, chunks[0].count, chunks[0].wants_logits) == (first, 1, True)
    reading = [(chunk.start, chunk.count, chunk.wants_logits) for chunks in steps for chunk in chunks[1:]]
    # The prompt is read a whole chunk a step; its last keeps the logits its first token needs.
    assert reading == [(0, 7, False), (7, 7, False), (14, 6, True)]
    both = run_step(planner)
    assert [(chunk.seq_id, chunk.start, chunk.count) for chunk in both] == [(first, 6, 1), (long, 20, 1)]
    counters = planner.counters()
    assert (counters.steps, counters.most_sequences_in_a_step, counters.sequence_steps) == (5, 2, 9)


def test_a_sequence_ends_after_max_tokens_and_gives_its_id_back() -> None:
    planner = BatchPlanner(n_batch=16, n_seq_max=2, cells_per_sequence=100)
    planner.admit(tokens(4), 3)
    steps = 0
    while planner.running:
        run_step(planner)
        steps += 1
    # One step reads the prompt and samples the first token; two more decode the next two.
    assert steps == 3
    assert planner.cells_in_use() == 0


def test_a_cancelled_sequence_in_a_running_step_is_dropped_and_the_step_still_lands() -> None:
    planner = BatchPlanner(n_batch=16, n_seq_max=2, cells_per_sequence=100)
    kept, cancelled = planner.admit(tokens(4), 5).seq_id, planner.admit(tokens(4, first=10), 5).seq_id
    chunks = planner.plan()
    planner.finish(cancelled, keep_cells=False)
    planner.decoded(chunks)
    assert planner.cells_in_use() == 4
    assert planner.sampled(kept)
    assert [chunk.seq_id for chunk in planner.plan()] == [kept]


def test_sampling_before_the_step_that_gives_logits_is_refused() -> None:
    planner = BatchPlanner(n_batch=2, n_seq_max=1, cells_per_sequence=100)
    seq_id = planner.admit(tokens(5), 5).seq_id
    planner.decoded(planner.plan())
    with pytest.raises(ValueError):
        planner.sampled(seq_id)


# A prompt from a small alphabet, so that prompts often share a start with the cells a finished one left.
PROMPTS = st.lists(st.integers(1, 3), min_size=1, max_size=40).map(tuple)
REQUESTS = st.lists(st.tuples(PROMPTS, st.integers(1, 12), st.integers(0, 6)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(REQUESTS, st.integers(0, 12), st.integers(1, 5))
def test_every_sequence_is_decoded_at_every_position_once_in_order_within_the_budget(
    requests: list[tuple[tuple[int, ...], int, int]], chunk_over_one: int, n_seq_max: int
) -> None:
    """Requests (prompt, max tokens, the step they arrive at) run to the end. Each sequence's positions run on
    from the prompt tokens its id held, without a gap or a repeat; what its id held really was its prompt's
    start; its prompt was read in chunks at fixed positions, one prompt chunk a step at most; and no step is
    over budget."""
    chunk = chunk_over_one + 1
    n_batch = chunk + n_seq_max - 1
    planner = BatchPlanner(n_batch=n_batch, n_seq_max=n_seq_max, cells_per_sequence=60)
    waiting = sorted(requests, key=lambda request: request[2])
    # What each id's cells hold, by this test's own account: a finished request's prompt and completion
    # less its last token, which no step decodes.
    held: dict[int, tuple[int, ...]] = {}
    running: dict[int, tuple[tuple[int, ...], tuple[int, ...], list[int]]] = {}
    finished = 0
    step = 0
    while waiting or planner.running:
        while waiting and waiting[0][2] <= step:
            prompt, max_tokens, _ = waiting[0]
            try:
                admission = planner.admit(prompt, max_tokens)
            except MeshError:
                break  # asks again at a later step, once others have finished
            waiting.pop(0)
            assert 0 <= admission.reused < len(prompt) and admission.reused % chunk == 0
            assert held.get(admission.seq_id, ())[: admission.reused] == prompt[: admission.reused]
            completion = tuple(range(100, 100 + max_tokens))
            running[admission.seq_id] = (prompt, completion, list(range(admission.reused)))
        chunks = planner.plan()
        assert sum(chunk.count for chunk in chunks) <= n_batch
        assert sum(1 for planned in chunks if planned.start < len(running[planned.seq_id][0])) <= 1
        planner.decoded(chunks)
        for planned in chunks:
            prompt, completion, positions = running[planned.seq_id]
            if planned.start < len(prompt):
                # A prompt chunk starts on a chunk boundary and ends at the next one or at the prompt's end.
                assert planned.start % chunk == 0
                assert planned.start + planned.count == min(planned.start + chunk, len(prompt))
            positions.extend(range(planned.start, planned.start + planned.count))
            if planned.wants_logits and not planner.sampled(planned.seq_id):
                planner.finish(planned.seq_id)
                del running[planned.seq_id]
                assert positions == list(range(len(prompt) + len(completion) - 1))
                held[planned.seq_id] = prompt[: len(prompt) // chunk * chunk]
                finished += 1
        step += 1
        assert step < 10_000
    assert finished == len(requests)
