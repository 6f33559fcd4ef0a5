"""The fault matrix within `make test`: Envoy, each gateway replica, the scheduler, the GPU monitor and the
inference service, each killed (SIGKILL) and hung (SIGSTOP), under load, on a mesh of its own.

For every fault: every request in flight had an answer before its deadline (a hang is found by keepalives,
deadlines and heartbeats, never waited out forever), every refusal in the window said why, the mesh
recovered, and every request afterwards was served. `make faults` runs the same on its own mesh and writes
the figures to bench/results/faults.json, whose table is in the README.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.faults import REQUEST_DEADLINE_SECONDS, Load, inject, markdown_table, matrix_processes, role_of
from tests.e2e.conftest import Mesh, running_mesh
from tests.otlp_receiver import OtlpReceiver
from tests.support import write_model_config

FAULTS = [(process, fault) for process in ("envoy", "gateway", "gateway-2", "scheduler", "gpu-monitor", "inference")
          for fault in ("SIGKILL", "SIGSTOP")]  # fmt: skip


TRANSPORT_ONLY = {"envoy": {"UNAVAILABLE:no reason"}, "gateway": {"INTERNAL:no reason", "UNAVAILABLE:no reason"}}


@pytest.fixture(scope="module")
def faulted_mesh(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver) -> Iterator[Mesh]:
    directory = tmp_path_factory.mktemp("faults")
    config = write_model_config(directory, context_length=1024, slots=2)
    env = {"MESHSERVE_GATEWAY_REPLICAS": "2", "MESHSERVE_MAX_QUEUE": "8", "MESHSERVE_SCHEDULER_MEMORY_BUDGET": "3GiB"}
    with running_mesh(directory, config, traces, env) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def load(faulted_mesh: Mesh) -> Iterator[Load]:
    running = Load(faulted_mesh.port("edge_http"), faulted_mesh.api_key)
    running.start()
    yield running
    running.stop()


def test_the_matrix_covers_every_process_it_names(faulted_mesh: Mesh) -> None:
    assert sorted(matrix_processes(faulted_mesh.state_dir)) == sorted({process for process, _ in FAULTS})


@pytest.mark.parametrize(("process", "fault"), FAULTS, ids=[f"{p}-{f}" for p, f in FAULTS])
def test_each_fault_is_answered_refused_with_reasons_and_recovered_from(
    faulted_mesh: Mesh, load: Load, process: str, fault: str
) -> None:
    result = inject(faulted_mesh.state_dir, process, fault, load)
    print(markdown_table([result]))
    assert result.in_flight >= 1
    assert result.answered_within_seconds < REQUEST_DEADLINE_SECONDS, result
    # Every refusal says why, but for those only the transport can tell: a client that cannot reach the
    # edge at all (Envoy down) gets UNAVAILABLE. A request a gateway had taken when it died is reset by
    # Envoy, which cannot send trailers for a dead upstream: UNAVAILABLE before its answer began, INTERNAL
    # (how gRPC reads a reset) after. Requests the dead gateway never took are retried on another.
    without_reason = {reason for reason in result.reasons if reason.endswith(":no reason")}
    assert without_reason <= TRANSPORT_ONLY.get(role_of(process), set()), result
    assert result.recovered_after_seconds is not None, result
    assert result.served_afterwards == result.sent_afterwards, result
