"""Which processes make up a local mesh, how each is started, and who each is (its certificate).

Pure: it only computes command lines, so it can be checked without starting anything.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.settings import LauncherSettings
from services.identity.dev_issuer import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from services.shared.mesh_config import MeshConfig
from services.shared.tls import TlsFiles

# Every identity the local mesh issues a certificate for; "cli" is the command-line client.
IDENTITIES = ("gpu-monitor", "scheduler", "inference", "gateway", "openai", "auth", "jobs", "edge", "cli")


class PortClashError(ValueError):
    """Two listeners of the plan share a port; started anyway, one would fail or both would split its callers."""


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    # The gRPC address whose health says the child is up; None for Envoy, which /healthz covers.
    health_address: str | None


def _python_module(module: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module, *args)


def _tls_flags(tls: TlsFiles) -> tuple[str, ...]:
    return ("--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca))


def inference_addresses(settings: LauncherSettings, mesh: MeshConfig) -> list[tuple[str, str]]:
    return [(model.name, settings.address(settings.inference_base_port + n)) for n, model in enumerate(mesh.models)]


def gateway_replica_names(settings: LauncherSettings) -> list[str]:
    """The first replica is "gateway", as in a mesh of one; the others are numbered from 1."""
    return ["gateway" if n == 0 else f"gateway-{n}" for n in range(settings.gateway_replicas)]


def gateway_addresses(settings: LauncherSettings) -> list[str]:
    return [settings.address(settings.gateway_port + n) for n in range(settings.gateway_replicas)]


def _gateway_callers_flag(settings: LauncherSettings) -> tuple[str, str]:
    # The OpenAI front and the job runner take the replicas as one comma-separated list (services.shared.channels).
    return ("--gateway", ",".join(gateway_addresses(settings)))


def planned_ports(settings: LauncherSettings, mesh: MeshConfig) -> dict[str, int]:
    """Every port the mesh will listen on, by what listens there."""
    replicas = gateway_replica_names(settings)
    ports = {
        "edge HTTP": settings.edge_http_port,
        "edge HTTPS": settings.edge_https_port,
        "edge admin": settings.edge_admin_port,
        **{name: settings.gateway_port + n for n, name in enumerate(replicas)},
        "scheduler": settings.scheduler_port,
        "gpu-monitor": settings.gpu_monitor_port,
        "openai": settings.openai_port,
        "auth": settings.auth_port,
        **{f"{name} metrics": settings.gateway_metrics_port + n for n, name in enumerate(replicas)},
        "scheduler metrics": settings.scheduler_metrics_port,
        "gpu-monitor metrics": settings.gpu_monitor_metrics_port,
        "openai metrics": settings.openai_metrics_port,
        "auth metrics": settings.auth_metrics_port,
        "jobs metrics": settings.jobs_metrics_port,
    }
    for n, model in enumerate(mesh.models):
        ports[f"inference-{model.name}"] = settings.inference_base_port + n
        ports[f"inference-{model.name} metrics"] = settings.inference_metrics_base_port + n
    return ports


def port_clashes(settings: LauncherSettings, mesh: MeshConfig) -> list[str]:
    """Listeners given the same port, as sentences; the base ports grow with the models, so any two can meet."""
    owners: dict[int, list[str]] = {}
    for listener, port in planned_ports(settings, mesh).items():
        owners.setdefault(port, []).append(listener)
    shared = [(port, names) for port, names in owners.items() if len(names) > 1]
    return [f"port {port} is planned for both {' and '.join(names)}" for port, names in shared]


def _metrics_flags(settings: LauncherSettings, port: int) -> tuple[str, ...]:
    return ("--metrics-listen", settings.address(port))


def trusted_issuers(settings: LauncherSettings) -> list[dict[str, object]]:
    dev = {
        "name": "meshserve-dev",
        "issuer": DEV_ISSUER,
        "audiences": [DEV_AUDIENCE],
        "jwks_file": str(DevIssuer(settings.dev_issuer_dir).jwks_file.resolve()),
    }
    return [*([dev] if settings.trust_dev_issuer else []), *settings.jwt_issuers]


def edge_writer_argv(settings: LauncherSettings, identity: TlsFiles) -> tuple[str, ...]:
    """The command that writes Envoy's bootstrap (gateway/edge), run once before the children start."""
    collector = settings.otlp_collector()
    issuer_flags = [flag for issuer in trusted_issuers(settings) for flag in ("--issuer", json.dumps(issuer))]
    return _python_module(
        "gateway.edge",
        "--out-dir", str(settings.edge_dir),
        *(flag for address in gateway_addresses(settings) for flag in ("--gateway", address)),
        "--openai", settings.address(settings.openai_port),
        "--auth", settings.address(settings.auth_port),
        *issuer_flags,
        "--http", settings.address(settings.edge_http_port),
        "--https", f"0.0.0.0:{settings.edge_https_port}",
        "--admin", settings.address(settings.edge_admin_port),
        "--otlp", f"{collector[0]}:{collector[1]}" if collector else "",
        *_tls_flags(identity),
    )  # fmt: skip


def plan_mesh(
    settings: LauncherSettings, mesh: MeshConfig, certs: dict[str, TlsFiles], envoy_bootstrap: Path
) -> list[ChildSpec]:
    """The children in start order; they are stopped in reverse."""
    if clashes := port_clashes(settings, mesh):
        raise PortClashError("; ".join(clashes))
    endpoints = inference_addresses(settings, mesh) if settings.local_node else []
    local_node = [
        _gpu_monitor(settings, certs["gpu-monitor"]),
        *(_inference(settings, n, model, address, certs["inference"]) for n, (model, address) in enumerate(endpoints)),
    ]
    return [
        *(local_node if settings.local_node else []),
        _scheduler(settings, certs["scheduler"]),
        _auth(settings, certs["auth"]),
        *(_gateway(settings, n, certs["gateway"]) for n in range(settings.gateway_replicas)),
        _openai(settings, certs["openai"]),
        _jobs(settings, certs["jobs"]),
        _envoy(settings, envoy_bootstrap),
    ]


def _gpu_monitor(settings: LauncherSettings, tls: TlsFiles) -> ChildSpec:
    address = settings.address(settings.gpu_monitor_port)
    metrics = _metrics_flags(settings, settings.gpu_monitor_metrics_port)
    argv = _python_module("services.gpu_monitor", "--listen", address, *metrics, *_tls_flags(tls))
    return ChildSpec("gpu-monitor", argv, address)


def _inference(settings: LauncherSettings, index: int, model: str, address: str, tls: TlsFiles) -> ChildSpec:
    argv = _python_module(
        "services.inference",
        "--config", str(settings.config),
        "--model", model,
        "--listen", address,
        # It registers itself with the scheduler, as an endpoint on another node would.
        "--scheduler", settings.address(settings.scheduler_port),
        *_metrics_flags(settings, settings.inference_metrics_base_port + index),
        *_tls_flags(tls),
    )  # fmt: skip
    return ChildSpec(f"inference-{model}", argv, address)


def _scheduler(settings: LauncherSettings, tls: TlsFiles) -> ChildSpec:
    address = settings.address(settings.scheduler_port)
    monitors = [*([settings.address(settings.gpu_monitor_port)] if settings.local_node else []), *settings.monitors]
    argv = _python_module(
        "orchestrator.scheduler",
        "--config", str(settings.config),
        "--listen", f"{settings.scheduler_host or settings.host}:{settings.scheduler_port}",
        *(flag for monitor in monitors for flag in ("--monitor", monitor)),
        "--max-queue", str(settings.max_queue),
        *_metrics_flags(settings, settings.scheduler_metrics_port),
        *_tls_flags(tls),
    )  # fmt: skip
    return ChildSpec("scheduler", argv, address)


def _gateway(settings: LauncherSettings, replica: int, tls: TlsFiles) -> ChildSpec:
    address = gateway_addresses(settings)[replica]
    argv = _python_module(
        "gateway",
        "--config", str(settings.config),
        "--listen", address,
        "--scheduler", settings.address(settings.scheduler_port),
        *_store_flags(settings),
        *_metrics_flags(settings, settings.gateway_metrics_port + replica),
        *_tls_flags(tls),
    )  # fmt: skip
    return ChildSpec(gateway_replica_names(settings)[replica], argv, address)


def _store_flags(settings: LauncherSettings) -> tuple[str, ...]:
    return ("--database-url", settings.store_url())


def _auth(settings: LauncherSettings, tls: TlsFiles) -> ChildSpec:
    address = settings.address(settings.auth_port)
    argv = _python_module(
        "gateway.auth",
        "--listen", address,
        *_store_flags(settings),
        *_metrics_flags(settings, settings.auth_metrics_port),
        *_tls_flags(tls),
    )  # fmt: skip
    return ChildSpec("auth", argv, address)


def _openai(settings: LauncherSettings, tls: TlsFiles) -> ChildSpec:
    argv = _python_module(
        "gateway.openai",
        "--listen", settings.address(settings.openai_port),
        *_gateway_callers_flag(settings),
        *_store_flags(settings),
        *_metrics_flags(settings, settings.openai_metrics_port),
        *_tls_flags(tls),
    )  # fmt: skip
    # An HTTP service: Envoy's /healthz covers it, as it covers Envoy.
    return ChildSpec("openai", argv, None)


def _jobs(settings: LauncherSettings, tls: TlsFiles) -> ChildSpec:
    argv = _python_module(
        "gateway.jobs",
        *_gateway_callers_flag(settings),
        *_store_flags(settings),
        *_metrics_flags(settings, settings.jobs_metrics_port),
        *_tls_flags(tls),
    )  # fmt: skip
    # It serves nothing: its health is in its log and its metrics.
    return ChildSpec("jobs", argv, None)


def _envoy(settings: LauncherSettings, bootstrap: Path) -> ChildSpec:
    envoy = Path(sys.executable).with_name("envoy")
    # A base id per admin port keeps Envoy's shared memory apart when several meshes run on one machine.
    argv = (str(envoy), "-c", str(bootstrap), "--base-id", str(settings.edge_admin_port), "--log-level", "warning")
    return ChildSpec("envoy", argv, None)
