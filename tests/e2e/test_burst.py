"""A burst of three times the mesh's capacity, all at once, with mixed priorities, through the TLS edge."""

from __future__ import annotations

from functools import partial

from bench.burst import burst_priorities, describe, run_burst
from bench.clients import LedgerReader, MeshGrpcClient
from tests.e2e.conftest import Mesh

SLOTS, QUEUE = 2, 4  # the session mesh's
CAPACITY = SLOTS + QUEUE


def test_a_burst_of_three_times_capacity_serves_every_high_request_and_refuses_the_rest(mesh: Mesh) -> None:
    client = MeshGrpcClient(mesh.port("edge_https"), mesh.state_dir / "certs" / "ca.pem", mesh.api_key)
    ledger = LedgerReader(mesh.port("scheduler"), mesh.identity("cli"))
    try:
        priorities = burst_priorities(CAPACITY, high=QUEUE)
        result = run_burst(partial(client.stream, 8), priorities, CAPACITY, ledger)
    finally:
        ledger.close()
    print(describe(result))
    assert result.requests == 3 * CAPACITY == len(priorities)
    assert result.by_priority["HIGH"]["served"] == result.by_priority["HIGH"]["sent"] == QUEUE
    # Served, refused at the door, shed from the queue for more urgent work, or (a LOW request that had
    # started before the urgent ones arrived) recalled: nothing else, nothing lost.
    assert result.failed == 0, result.failures
    served = sum(figures["served"] for figures in result.by_priority.values())
    assert served >= CAPACITY and result.rejected + result.shed + result.recalled == result.requests - served
    # How soon the door refuses is a figure for `make bench` (bench/burst.py), not a bound for busy CPUs.
    assert result.rejected > 0
    assert 0 < result.ledger_peak_bytes <= result.ledger_capacity_bytes
