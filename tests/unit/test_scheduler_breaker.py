from orchestrator.scheduler.core.breaker import BreakerPolicy, BreakerState, EndpointHealthRecord


def test_a_run_of_failures_opens_the_circuit_and_a_success_resets_the_run() -> None:
    record = EndpointHealthRecord(BreakerPolicy(consecutive_failures=3, min_samples=99))
    record.failed(0)
    record.failed(0)
    record.succeeded(0, 0.2)
    record.failed(0)
    record.failed(0)
    assert record.state(0) is BreakerState.CLOSED
    record.failed(0)
    assert record.state(0) is BreakerState.OPEN and not record.allows(4.9)


def test_a_high_failure_rate_opens_the_circuit_without_a_run() -> None:
    record = EndpointHealthRecord(BreakerPolicy(window=10, min_samples=6, failure_rate=0.5, consecutive_failures=99))
    for _ in range(3):
        record.succeeded(0, None)
        record.failed(0)
    assert record.failure_rate == 0.5 and record.state(0) is BreakerState.OPEN


def test_half_open_lets_one_probe_through_and_a_failed_probe_doubles_the_wait() -> None:
    record = EndpointHealthRecord(BreakerPolicy(consecutive_failures=1, open_seconds=5))
    record.failed(0)
    assert record.state(5) is BreakerState.HALF_OPEN and record.allows(5)
    record.started(5)
    assert not record.allows(5)  # one probe at a time
    record.failed(6)
    assert record.state(15.9) is BreakerState.OPEN and record.state(16) is BreakerState.HALF_OPEN
    record.started(16)
    record.succeeded(16, 0.1)
    assert record.state(16) is BreakerState.CLOSED and record.failure_rate == 0.0


def test_a_cancelled_probe_frees_the_probe_without_a_verdict() -> None:
    record = EndpointHealthRecord(BreakerPolicy(consecutive_failures=1, open_seconds=1))
    record.failed(0)
    record.started(1)
    record.abandoned()
    assert record.state(1) is BreakerState.HALF_OPEN and record.allows(1)


def test_latency_is_a_running_average_of_time_to_first_token() -> None:
    record = EndpointHealthRecord(BreakerPolicy(latency_smoothing=0.5))
    record.succeeded(0, 1.0)
    record.succeeded(0, 3.0)
    assert record.latency_ema_seconds == 2.0
