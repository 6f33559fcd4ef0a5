import pytest

from bench.workload import CUT, Measurement, distribution, percentile, summarize


def test_percentiles_pick_from_the_sorted_values() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 51.0 and percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) is None
    assert distribution([2.0]) == {"p50": 2.0, "p90": 2.0, "p99": 2.0}


def test_a_short_answer_is_a_failure_not_throughput() -> None:
    complete = Measurement(first_token=0.1, token_times=[0.1, 0.2, 0.3], total=0.3, tokens=3).check_length(3)
    ended_short = Measurement(first_token=0.1, token_times=[0.1], total=0.1, tokens=1).check_length(3)
    refused = Measurement(status="RESOURCE_EXHAUSTED").check_length(3)
    assert (complete.status, ended_short.status, refused.status) == ("ok", "truncated", "RESOURCE_EXHAUSTED")
    summary = summarize("s", 2, [complete, ended_short, refused], window=(0.0, 1.5))
    assert summary.tokens == 3 and summary.failures == 2
    assert summary.output_tokens_per_second == 2.0 and summary.requests_per_second == 1 / 1.5
    assert summary.inter_token["p50"] == pytest.approx(0.1) and summary.ttft["p50"] == 0.1


def test_a_cell_counts_what_arrived_in_its_window_and_a_cut_stream_is_not_a_failure() -> None:
    # Sent at 9.0 and 9.5 into a window from 9.0 to 10.0: the first finished inside it; the second was
    # still streaming at its end and was cut at its next token, which came after it.
    finished = Measurement(first_token=0.1, token_times=[0.1, 0.2, 0.3], total=0.3, tokens=3, sent_at=9.0)
    cut = Measurement(first_token=0.2, token_times=[0.2, 0.4, 0.6], total=0.6, tokens=3, sent_at=9.5, status=CUT)
    queued_past_the_end = Measurement(first_token=0.8, token_times=[0.8], total=0.8, sent_at=9.9, status=CUT)
    summary = summarize("s", 2, [finished, cut.check_length(8), queued_past_the_end], window=(9.0, 10.0))
    assert summary.failures == 0 and summary.tokens == 5
    assert summary.output_tokens_per_second == 5.0 and summary.requests_per_second == 1.0
    # The third waited past the window's end for its first token: that wait counts, its token does not.
    assert summary.ttft == {"p50": 0.2, "p90": 0.8, "p99": 0.8}
    assert summary.end_to_end["p50"] == 0.3  # only the one that finished


def test_a_relay_cell_counts_only_what_arrived_in_its_window_and_finds_the_longest_stall() -> None:
    from dataclasses import replace

    from bench.relay import QUICK_RELAY, summarize_cell
    from bench.relay_clients import StreamRecord

    plan = replace(QUICK_RELAY, tokens_per_second=100.0)
    # A stream paced at 10 ms a token (100 tokens/s), with one 300 ms stall, and a message of
    # three tokens that built up behind it; then a message after the window ends.
    steady = StreamRecord(sent=0.95, arrivals=[1.0, 1.01, 1.02, 1.32, 1.33, 2.5], tokens=[1, 1, 1, 3, 1, 1])
    refused = StreamRecord(sent=1.1, failure="RESOURCE_EXHAUSTED")
    before_window = StreamRecord(sent=0.1, arrivals=[0.2, 0.21], tokens=[1, 1])
    cell = summarize_cell("one gateway", 2, [steady, refused, before_window], (1.0, 2.0), plan)
    assert cell.tokens_per_second == 7 and cell.messages_per_second == 5
    assert cell.tokens_per_message == pytest.approx(7 / 5)
    assert cell.longest_stall_ms == pytest.approx(300) and cell.stalls_over_target == 1
    # 330 ms over the 6 tokens after the first: 55 ms a token, 45 ms more than the engine's 10.
    assert cell.token_interval_p50_ms == pytest.approx(55) and cell.token_interval_added_ms == pytest.approx(45)
    assert cell.failures == 1
    assert cell.ttft_p50_ms is None  # the one stream with a first token was sent before the window


def test_a_profile_sums_py_spys_stacks_by_function_whatever_the_line() -> None:
    from bench.profile import summarize as summarize_profile

    collapsed = "\n".join([
        "MainThread;run (asyncio/base_events.py:10);relay (gateway/core/relay.py:70);take (gateway/core/relay.py:50) 6",
        "MainThread;run (asyncio/base_events.py:11);relay (gateway/core/relay.py:71) 3",
        "MainThread;run (asyncio/base_events.py:10);select (selectors.py:400) 1",
    ])  # fmt: skip
    profile = summarize_profile("gateway", collapsed)
    assert profile.samples == 10
    assert profile.own[:2] == [("take (gateway/core/relay.py)", 0.6), ("relay (gateway/core/relay.py)", 0.3)]
    assert dict(profile.inclusive)["run (asyncio/base_events.py)"] == 1.0
    assert dict(profile.inclusive)["relay (gateway/core/relay.py)"] == 0.9


def test_events_that_carry_several_tokens_are_weighed_by_the_usage_of_the_finished_requests() -> None:
    # An OpenAI stream: the finished request got 4 tokens in 2 events, so a cut one's 3 events in the
    # window stand for 6.
    finished = Measurement(first_token=0.1, token_times=[0.1, 0.2], total=0.2, tokens=4, sent_at=0.0)
    cut = Measurement(first_token=0.1, token_times=[0.1, 0.3, 0.5, 1.5], total=1.5, sent_at=0.3, status=CUT)
    summary = summarize("s", 2, [finished, cut], window=(0.0, 1.0))
    assert summary.tokens == 4 + 6 and summary.output_tokens_per_second == 10.0
