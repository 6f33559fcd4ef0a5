import pytest

from bench.workload import Measurement, distribution, percentile, summarize


def test_percentiles_pick_from_the_sorted_values() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 51.0 and percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) is None
    assert distribution([2.0]) == {"p50": 2.0, "p90": 2.0, "p99": 2.0}


def test_a_short_answer_is_a_failure_not_throughput() -> None:
    complete = Measurement(first_token=0.1, token_times=[0.1, 0.2, 0.3], total=0.3, tokens=3).check_length(3)
    cut_off = Measurement(first_token=0.1, token_times=[0.1], total=0.1, tokens=1).check_length(3)
    refused = Measurement(status="RESOURCE_EXHAUSTED").check_length(3)
    assert (complete.status, cut_off.status, refused.status) == ("ok", "truncated", "RESOURCE_EXHAUSTED")
    summary = summarize("s", 2, [complete, cut_off, refused], wall_seconds=1.5)
    assert summary.tokens == 3 and summary.failures == 2
    assert summary.output_tokens_per_second == 2.0 and summary.requests_per_second == 1 / 1.5
    assert summary.inter_token["p50"] == pytest.approx(0.1) and summary.ttft["p50"] == 0.1
