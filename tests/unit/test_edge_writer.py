"""`python -m gateway.edge`, as the launcher runs it: the bootstrap a local mesh starts Envoy with."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from orchestrator.mesh_plan import edge_writer_argv
from orchestrator.settings import LauncherSettings
from services.shared.certs import ensure_dev_certs
from tests.support import REPO_ROOT
from tests.unit.test_edge_bootstrap import listener, socket


def write(tmp_path: Path, **settings: object) -> tuple[subprocess.CompletedProcess, LauncherSettings]:
    launcher = LauncherSettings(state_dir=tmp_path / "state", **settings)  # type: ignore[arg-type]
    identity = ensure_dev_certs(launcher.certs_dir, ["edge"])["edge"]
    argv = edge_writer_argv(launcher, identity)
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, check=False), launcher


def test_the_writer_puts_the_launchers_ports_into_the_bootstrap_it_names(tmp_path: Path) -> None:
    written, launcher = write(
        tmp_path, edge_http_port=18080, edge_https_port=18443, edge_admin_port=19901, gateway_port=15041
    )
    assert written.returncode == 0, written.stderr
    path = Path(written.stdout.strip())
    assert path == launcher.edge_dir / "envoy.json"
    bootstrap = json.loads(path.read_text())
    assert socket(listener(bootstrap, "edge_http")["address"]) == ("127.0.0.1", 18080)
    assert socket(listener(bootstrap, "edge_https")["address"]) == ("0.0.0.0", 18443)
    assert socket(bootstrap["admin"]["address"]) == ("127.0.0.1", 19901)
    assert "15041" in json.dumps(bootstrap["static_resources"]["clusters"])
    assert (launcher.edge_dir / "gateway.pb").stat().st_size > 0
    assert "tracing" not in json.dumps(bootstrap), "no collector, no tracing"


def test_a_collector_in_the_environment_reaches_envoy(tmp_path: Path) -> None:
    written, launcher = write(tmp_path, otel_exporter_otlp_endpoint="http://collector.local:4317")
    assert written.returncode == 0, written.stderr
    bootstrap = json.loads((launcher.edge_dir / "envoy.json").read_text())
    assert "collector.local" in json.dumps(bootstrap["static_resources"]["clusters"])


@pytest.mark.parametrize("address", ["no-port", "host:", ":8080", "host:eighty"])
def test_a_malformed_address_is_refused_with_its_value(tmp_path: Path, address: str) -> None:
    launcher = LauncherSettings(state_dir=tmp_path / "state")
    identity = ensure_dev_certs(launcher.certs_dir, ["edge"])["edge"]
    argv = [*edge_writer_argv(launcher, identity), "--http", address]
    written = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert written.returncode != 0
    assert "HOST:PORT" in written.stderr and "Traceback" not in written.stderr
