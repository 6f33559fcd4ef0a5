import pytest
from meshserve.inference.v1 import inference_pb2

from orchestrator.scheduler.core.ledger import KvShape, MemoryLedger
from orchestrator.scheduler.core.model import Footprint
from orchestrator.scheduler.endpoint_watcher import footprint_of

GIB = 1024**3


def test_kv_cost_follows_the_model_shape() -> None:
    # Gemma 3 270M: 18 layers, 1 KV head of 256, f16: 18 KiB per token.
    assert KvShape(layers=18, kv_heads=1, head_dim=256).bytes_for(1) == 18 * 1024
    assert KvShape(18, 1, 256).bytes_for(1024) == 2 * 18 * 256 * 1024 * 2


def test_reservations_add_up_and_come_back() -> None:
    ledger = MemoryLedger(device_total_bytes=10 * GIB)
    ledger.load("m", 2 * GIB)
    ledger.reserve("slot-1", GIB)
    ledger.reserve("slot-2", GIB)
    assert ledger.reserved_bytes == 4 * GIB and ledger.used_fraction == pytest.approx(0.4)
    ledger.release("slot-1")
    ledger.release("slot-1")  # releasing twice is harmless: a stream can close after its release
    assert ledger.reserved_bytes == 3 * GIB
    with pytest.raises(ValueError):
        ledger.reserve("slot-2", GIB)
    ledger.unload("m")
    assert ledger.reserved_bytes == GIB and not ledger.is_resident("m")


def test_measured_use_wins_when_it_is_larger() -> None:
    ledger = MemoryLedger(device_total_bytes=10 * GIB)
    ledger.load("m", 2 * GIB)
    ledger.observe(measured_used_bytes=7 * GIB)
    assert ledger.used_bytes == 7 * GIB
    assert ledger.fits(3 * GIB) and not ledger.fits(3 * GIB + 1)
    ledger.observe(measured_used_bytes=GIB)
    assert ledger.used_bytes == 2 * GIB  # the estimate wins when reality reads lower


def test_a_budget_smaller_than_the_device_caps_capacity() -> None:
    ledger = MemoryLedger(device_total_bytes=24 * GIB, budget_bytes=2 * GIB)
    ledger.load("m", GIB)
    assert ledger.capacity_bytes == 2 * GIB and ledger.used_fraction == 0.5
    assert not ledger.fits(GIB + 1)
    assert MemoryLedger(device_total_bytes=GIB, budget_bytes=4 * GIB).capacity_bytes == GIB


def test_a_device_that_reports_no_memory_admits_nothing() -> None:
    assert MemoryLedger(device_total_bytes=0).used_fraction == 1.0


def test_an_engine_s_footprint_splits_into_resident_weights_and_kv_per_request() -> None:
    kv = KvShape(18, 1, 256).bytes_for(2048)
    reported = inference_pb2.ModelInfo(
        total_slots=2, context_length=2048, weights_bytes=GIB // 4, kv_cache_bytes_per_slot=kv,
        memory_footprint_bytes=GIB + 2 * kv,
    )  # fmt: skip
    assert footprint_of(reported) == Footprint(GIB, kv)
    # No KV figure from the engine: estimated from the model's shape over its context.
    shaped = inference_pb2.ModelInfo(
        total_slots=1, context_length=2048, layer_count=18, kv_head_count=1, head_dim=256, weights_bytes=GIB
    )
    assert footprint_of(shaped) == Footprint(GIB, kv)
