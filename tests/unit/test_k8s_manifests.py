"""deploy/k8s, checked offline: kustomize renders each overlay, every resource validates strictly against
Kubernetes' schemas, and the manifests agree with the code: each flag is one its service accepts, ports
match the launcher's, each role mounts the certificate of its own SPIFFE ID, and network policies admit
exactly the callers each service authorises. The image's Dockerfile passes hadolint.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.auth.settings import AuthSettings
from gateway.edge.settings import EdgeWriterSettings
from gateway.jobs.settings import JobRunnerSettings
from gateway.openai.settings import OpenAISettings
from gateway.settings import GatewaySettings
from orchestrator.scheduler.settings import SchedulerSettings
from orchestrator.settings import LauncherSettings
from services.gpu_monitor.settings import GpuMonitorSettings
from services.inference.settings import InferenceSettings
from services.shared.certs import role_name, spiffe_id
from services.shared.mesh_config import load_mesh_config
from tests.support import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"
OVERLAYS = ("cpu", "gpu")
BIN = Path(sys.executable).parent
# What each role's container runs, and the settings that read its flags.
ROLES: dict[str, tuple[str, type]] = {
    "gateway": ("gateway", GatewaySettings),
    "scheduler": ("orchestrator.scheduler", SchedulerSettings),
    "auth": ("gateway.auth", AuthSettings),
    "openai": ("gateway.openai", OpenAISettings),
    "jobs": ("gateway.jobs", JobRunnerSettings),
    "gpu-monitor": ("services.gpu_monitor", GpuMonitorSettings),
    "inference": ("services.inference", InferenceSettings),
    "edge": ("gateway.edge", EdgeWriterSettings),
}
_LAUNCHER = LauncherSettings()
# The launcher's ports, which the manifests keep, so an operator reads the same numbers everywhere.
PORTS = {
    "gateway": (_LAUNCHER.gateway_port, _LAUNCHER.gateway_metrics_port),
    "scheduler": (_LAUNCHER.scheduler_port, _LAUNCHER.scheduler_metrics_port),
    "auth": (_LAUNCHER.auth_port, _LAUNCHER.auth_metrics_port),
    "openai": (_LAUNCHER.openai_port, _LAUNCHER.openai_metrics_port),
    "jobs": (None, _LAUNCHER.jobs_metrics_port),
    "gpu-monitor": (_LAUNCHER.gpu_monitor_port, _LAUNCHER.gpu_monitor_metrics_port),
    "inference": (_LAUNCHER.inference_base_port, _LAUNCHER.inference_metrics_base_port),
}
# What the kubelet fills in from the downward API.
DOWNWARD = {"$(POD_IP)": "10.0.0.7", "$(NODE_NAME)": "node-a"}


def kustomize(path: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(K8S / "overlays" / overlay))


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def workloads(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "DaemonSet")]


def component(doc: dict[str, Any]) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def role_container(workload: dict[str, Any]) -> dict[str, Any]:
    """The container that runs the role: Envoy's bootstrap writer for the edge, else the only one."""
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", spec["containers"])[0]


def flags(container: dict[str, Any]) -> list[str]:
    args = []
    for arg in container["args"]:
        for placeholder, value in DOWNWARD.items():
            arg = arg.replace(placeholder, value)
        args.append(arg)
    return args


def flag(container: dict[str, Any], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in flags(container) if arg.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} in {container['args']}"
    return values[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_resource_validates_strictly(overlay: str) -> None:
    docs = rendered(overlay)
    assert {"Deployment", "DaemonSet", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "Namespace"} <= {doc["kind"] for doc in docs}  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_manifest_with_a_field_kubernetes_does_not_know_is_refused() -> None:
    """The check above can fail: strict validation refuses what the schema lacks."""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_role_runs_its_service_with_flags_that_service_accepts(overlay: str, tmp_path: Path) -> None:
    seen = set()
    for workload in workloads(rendered(overlay)):
        role = component(workload)
        module, settings = ROLES[role]
        container = role_container(workload)
        assert container["command"] == ["python", "-m", module]
        # The settings parse every flag, as the service would at start: a renamed flag fails here.
        parsed = settings(_cli_parse_args=flags(container))
        assert parsed is not None
        seen.add(role)
    assert seen == set(ROLES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_are_the_launchers_and_each_service_leads_to_its_role(overlay: str) -> None:
    docs = rendered(overlay)
    services = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Service")}
    for workload in workloads(docs):
        role = component(workload)
        if role == "edge":
            continue
        container = role_container(workload)
        port, metrics = PORTS[role]
        assert flag(container, "metrics-listen") == f"0.0.0.0:{metrics}"
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(metrics)
        if port is None:
            continue
        assert flag(container, "listen") == f"0.0.0.0:{port}"
        assert {p["containerPort"] for p in container["ports"]} == {port, metrics}
        if role in services:
            assert services[role]["spec"]["selector"]["app.kubernetes.io/component"] == role
            assert [p["port"] for p in services[role]["spec"]["ports"]] == [port]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_address_a_role_dials_is_a_service_on_its_port(overlay: str) -> None:
    docs = rendered(overlay)
    ports = {doc["metadata"]["name"]: {p["port"] for p in doc["spec"]["ports"]} for doc in of_kind(docs, "Service")}
    dialled = 0
    for workload in workloads(docs):
        for arg in flags(role_container(workload)):
            for name, port in re.findall(r"([a-z-]+)\.meshserve\.svc\.cluster\.local:(\d+)", arg):
                assert int(port) in ports[name], arg
                dialled += 1
    assert dialled >= 6


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_role_mounts_the_certificate_of_its_own_spiffe_id(overlay: str) -> None:
    certificates = {
        doc["spec"]["secretName"]: doc for doc in kustomize_component("cert-manager") if doc["kind"] == "Certificate"
    }
    for workload in workloads(rendered(overlay)):
        role = component(workload)
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        secret = volumes["tls"]["secret"]["secretName"]
        assert secret == f"meshserve-{role}-tls"
        certificate = certificates[secret]["spec"]
        assert certificate["uris"] == [spiffe_id(role)]
        assert role_name(role) in certificate["dnsNames"]
        container = role_container(workload)
        mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert flag(container, "tls-cert").startswith(mounted["tls"])


def kustomize_component(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / "components" / name / "certificates.yaml").read_text()) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_exactly_the_callers_each_service_authorises(overlay: str) -> None:
    docs = rendered(overlay)
    admitted = {}
    for policy in of_kind(docs, "NetworkPolicy"):
        if not policy["metadata"]["name"].endswith("-callers"):
            continue
        callee = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"port": PORTS[callee][0]}]
        admitted[callee] = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]}
    # The command-line client is an operator's tool, run outside the cluster's pods.
    authorised = {role: set(ROLES[role][1].model_fields["allowed_callers"].default) - {"cli"} for role in admitted}
    authorised["scheduler"] |= {"inference"}  # for RegisterEndpoint alone (orchestrator/scheduler/app.py)
    assert admitted == authorised
    assert set(admitted) == {"gateway", "auth", "openai", "scheduler", "inference", "gpu-monitor"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_environment_variable_is_one_its_service_reads(overlay: str) -> None:
    named = 0
    for workload in workloads(rendered(overlay)):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                name = variable["name"]
                if not name.startswith("MESHSERVE_"):
                    continue
                settings = ROLES[component(workload)][1]
                prefix = settings.model_config["env_prefix"]
                fields = set(settings.model_fields)
                aliases = {
                    choice
                    for info in settings.model_fields.values()
                    if info.validation_alias is not None
                    for choice in getattr(info.validation_alias, "choices", [info.validation_alias])
                }
                assert name.removeprefix(prefix).lower() in fields or name in aliases, name
                named += 1
    assert named >= 4  # the store's URL, in each role that keeps records


def test_the_store_url_comes_from_a_secret() -> None:
    for workload in workloads(rendered("cpu")):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                if variable["name"] == "MESHSERVE_DATABASE_URL":
                    assert variable["valueFrom"]["secretKeyRef"] == {"name": "meshserve-database", "key": "url"}


def test_one_inference_deployment_per_model_of_the_mesh_config(tmp_path: Path) -> None:
    (config_map,) = [doc for doc in rendered("cpu") if doc["kind"] == "ConfigMap" and "meshserve.toml" in doc["data"]]
    (tmp_path / "meshserve.toml").write_text(config_map["data"]["meshserve.toml"])
    mesh = load_mesh_config(tmp_path / "meshserve.toml")
    served = [flag(role_container(w), "model") for w in workloads(rendered("cpu")) if component(w) == "inference"]
    assert sorted(served) == sorted(model.name for model in mesh.models)


def test_the_gpu_overlay_asks_for_a_gpu_and_gives_the_monitor_nvml() -> None:
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered("gpu")}
    inference = docs[("Deployment", "inference-gemma-3-270m")]["spec"]["template"]["spec"]
    assert inference["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    monitor = docs[("DaemonSet", "gpu-monitor")]["spec"]["template"]["spec"]
    env = {variable["name"]: variable.get("value") for variable in monitor["containers"][0]["env"]}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility" and monitor["runtimeClassName"] == "nvidia"
    cpu = {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered("cpu")}
    assert "nvidia.com/gpu" not in str(cpu[("Deployment", "inference-gemma-3-270m")])


def test_the_image_is_multi_stage_non_root_and_passes_hadolint() -> None:
    dockerfile = REPO_ROOT / "deploy" / "Dockerfile"
    linted = subprocess.run([str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    lines = [line.strip() for line in dockerfile.read_text().splitlines() if line.strip() and not line.startswith("#")]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and "AS builder" in stages[0]
    final = lines[lines.index(stages[1]) :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # What the manifests rely on: the venv's envoy, and the chat templates under /app/deploy.
    assert "COPY --from=builder /opt/venv /opt/venv" in final and "WORKDIR /app" in final
    assert "COPY deploy/chat_templates deploy/chat_templates" in final
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile.read_text(), re.MULTILINE):
        assert (REPO_ROOT / source).exists(), source
