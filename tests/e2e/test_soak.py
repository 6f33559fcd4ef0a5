"""The short soak, in `make test`: every surface at about 80% of capacity for 75 s on the test mesh.

The ten-minute soak is `make soak` (bench/soak.py), on its own mesh. This one reads the services after a
25 s warm-up rather than after the second minute, and checks the same things: every request served,
refused or failed with a reason, none lost; every surface served; no RSS grown by more than 10%, no open
descriptors more, between the two quiet readings (Envoy's pooled connections, as its admin stats count
them, aside).
"""

from __future__ import annotations

from bench.soak import Soak, print_report
from bench.soak_clients import Target
from tests.e2e.conftest import Mesh

SECONDS = 75
WARMUP_SECONDS = 25


def test_a_short_soak_loses_nothing_and_leaks_nothing(mesh: Mesh) -> None:
    target = Target(mesh.port("edge_http"), mesh.port("edge_https"), mesh.state_dir / "certs" / "ca.pem",
                    mesh.api_key, mesh.state_dir, mesh.port("edge_admin"))  # fmt: skip
    report = Soak(target, workers=2, max_tokens=8).run(SECONDS, WARMUP_SECONDS)
    print_report(report)
    # The readings cover the whole mesh, not only what happened to be found.
    assert {"envoy", "gateway", "scheduler", "inference", "gpu-monitor", "auth", "openai"} <= set(report.at_end)
    assert len(report.outcomes) >= 20
    assert report.violations() == []
