import pytest

from services.inference.core.slots import SlotPool
from services.shared.errors import ErrorKind, MeshError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_slots_run_out_and_come_back() -> None:
    pool = SlotPool(2, FakeClock())
    first, second = pool.try_acquire(), pool.try_acquire()
    assert {first.slot_number, second.slot_number} == {0, 1}
    assert pool.free == 0
    with pytest.raises(MeshError) as refused:
        pool.try_acquire()
    assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED
    assert refused.value.reason == "SLOTS_EXHAUSTED"
    assert refused.value.retry_after_seconds is not None and refused.value.retry_after_seconds > 0
    pool.release(first)
    assert pool.free == 1
    assert pool.try_acquire().slot_number == first.slot_number


def test_releasing_twice_is_a_bug() -> None:
    pool = SlotPool(1, FakeClock())
    lease = pool.try_acquire()
    pool.release(lease)
    with pytest.raises(ValueError):
        pool.release(lease)


def test_retry_hint_follows_observed_durations() -> None:
    clock = FakeClock()
    pool = SlotPool(2, clock)
    before = pool.retry_hint_seconds()
    for _ in range(30):
        lease = pool.try_acquire()
        clock.now += 10.0
        pool.release(lease)
    assert pool.retry_hint_seconds() > before
    assert pool.retry_hint_seconds() == pytest.approx(5.0, rel=0.05)


def test_a_pool_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        SlotPool(0)
