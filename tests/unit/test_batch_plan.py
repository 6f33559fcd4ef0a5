"""The continuous-batching planner: admission by sequence ids and KV cells, one decode step for every
running sequence, long prompts read in chunks between the others' tokens, and positions without gaps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inference.core.batch_plan import BatchPlanner, Chunk
from services.shared.errors import ErrorKind, MeshError


def refusal_of(planner: BatchPlanner, prompt_tokens: int, max_tokens: int) -> MeshError:
    with pytest.raises(MeshError) as refused:
        planner.admit(prompt_tokens, max_tokens)
    return refused.value


def run_step(planner: BatchPlanner) -> list[Chunk]:
    """One step as the engine runs it: plan, decode, then sample wherever the step kept logits."""
    chunks = planner.plan()
    planner.decoded(chunks)
    for chunk in chunks:
        if chunk.wants_logits and not planner.sampled(chunk.seq_id):
            planner.finish(chunk.seq_id)
    return chunks


def test_a_sequence_is_admitted_with_an_id_and_its_cells_reserved_for_its_whole_length() -> None:
    planner = BatchPlanner(n_batch=64, n_seq_max=4, kv_cells=100)
    assert planner.admit(10, 20) == 0
    assert planner.admit(5, 5) == 1
    assert planner.reserved_cells == 40
    planner.finish(0)
    assert planner.reserved_cells == 10
    # The freed id is the next one handed out.
    assert planner.admit(1, 1) == 0


def test_a_sequence_that_cannot_fit_is_refused_with_a_typed_error() -> None:
    planner = BatchPlanner(n_batch=64, n_seq_max=2, kv_cells=100)
    planner.admit(40, 20)
    full = refusal_of(planner, 30, 20)
    assert (full.kind, full.reason) == (ErrorKind.RESOURCE_EXHAUSTED, "KV_CACHE_FULL")
    assert full.retry_after_seconds is not None
    assert refusal_of(planner, 100, 1).reason == "KV_CACHE_TOO_SMALL"
    planner.admit(10, 10)
    assert refusal_of(planner, 1, 1).reason == "NO_SEQUENCE_FREE"


def test_generating_sequences_decode_every_step_while_a_long_prompt_is_read_in_chunks() -> None:
    planner = BatchPlanner(n_batch=8, n_seq_max=4, kv_cells=1000)
    first = planner.admit(3, 10)
    run_step(planner)  # the short prompt, whole, and its first token sampled
    long = planner.admit(20, 10)
    steps = [run_step(planner) for _ in range(3)]
    for chunks in steps:
        # Every step decodes the running sequence's one token first, and keeps its logits.
        assert (chunks[0].seq_id, chunks[0].count, chunks[0].wants_logits) == (first, 1, True)
    reading = [(chunk.start, chunk.count, chunk.wants_logits) for chunks in steps for chunk in chunks[1:]]
    # The prompt gets the rest of each step's budget; its last chunk keeps the logits its first token needs.
    assert reading == [(0, 7, False), (7, 7, False), (14, 6, True)]
    both = run_step(planner)
    assert [(chunk.seq_id, chunk.start, chunk.count) for chunk in both] == [(first, 6, 1), (long, 20, 1)]
    assert planner.counters().most_sequences_in_a_step == 2


def test_a_sequence_ends_after_max_tokens_and_gives_its_cells_back() -> None:
    planner = BatchPlanner(n_batch=16, n_seq_max=2, kv_cells=100)
    planner.admit(4, 3)
    steps = 0
    while planner.running:
        run_step(planner)
        steps += 1
    # One step reads the prompt and samples the first token; two more decode the next two.
    assert steps == 3
    assert planner.reserved_cells == 0


def test_a_cancelled_sequence_in_a_running_step_is_dropped_and_the_step_still_lands() -> None:
    planner = BatchPlanner(n_batch=16, n_seq_max=2, kv_cells=100)
    kept, cancelled = planner.admit(4, 5), planner.admit(4, 5)
    chunks = planner.plan()
    planner.finish(cancelled)
    planner.decoded(chunks)
    assert planner.reserved_cells == 9
    assert planner.sampled(kept)
    assert [chunk.seq_id for chunk in planner.plan()] == [kept]


def test_sampling_before_the_step_that_gives_logits_is_refused() -> None:
    planner = BatchPlanner(n_batch=2, n_seq_max=1, kv_cells=100)
    seq_id = planner.admit(5, 5)
    planner.decoded(planner.plan())
    with pytest.raises(ValueError):
        planner.sampled(seq_id)


REQUESTS = st.lists(st.tuples(st.integers(1, 40), st.integers(1, 12), st.integers(0, 6)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(REQUESTS, st.integers(1, 16), st.integers(1, 5))
def test_every_sequence_is_decoded_at_every_position_once_in_order_within_the_budget(
    requests: list[tuple[int, int, int]], n_batch: int, n_seq_max: int
) -> None:
    """Requests (prompt, max tokens, the step they arrive at) run to the end; each sequence's positions are
    0, 1, 2, ... without a gap or a repeat, no step is over budget, and the reserved cells never overflow."""
    planner = BatchPlanner(n_batch=n_batch, n_seq_max=n_seq_max, kv_cells=200)
    waiting = sorted(requests, key=lambda request: request[2])
    positions: dict[int, list[int]] = {}
    lengths: dict[int, int] = {}
    finished: list[tuple[int, int]] = []
    step = 0
    while waiting or planner.running:
        while waiting and waiting[0][2] <= step:
            prompt, max_tokens, _ = waiting[0]
            try:
                seq_id = planner.admit(prompt, max_tokens)
            except MeshError:
                break  # asks again at a later step, once others have finished
            waiting.pop(0)
            positions[seq_id], lengths[seq_id] = [], prompt + max_tokens - 1
        chunks = planner.plan()
        assert sum(chunk.count for chunk in chunks) <= n_batch
        assert planner.reserved_cells <= 200
        for chunk in chunks:
            positions[chunk.seq_id].extend(range(chunk.start, chunk.start + chunk.count))
        run_step_chunks(planner, chunks, finished, positions, lengths)
        step += 1
        assert step < 10_000
    assert len(finished) == len(requests)
    # Each decoded its whole prompt and every sampled token but the last, which no step needs.
    for decoded, length in finished:
        assert decoded == length


def run_step_chunks(
    planner: BatchPlanner,
    chunks: list[Chunk],
    finished: list[tuple[int, int]],
    positions: dict[int, list[int]],
    lengths: dict[int, int],
) -> None:
    """run_step on planned chunks, noting each finished sequence's decoded positions against its length."""
    planner.decoded(chunks)
    for chunk in chunks:
        if chunk.wants_logits and not planner.sampled(chunk.seq_id):
            planner.finish(chunk.seq_id)
            decoded = positions.pop(chunk.seq_id)
            assert decoded == list(range(len(decoded)))
            finished.append((len(decoded), lengths.pop(chunk.seq_id)))
