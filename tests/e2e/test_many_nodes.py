"""A mesh of three hosts: two nodes, each a network namespace with its own GPU monitor, inference endpoint and
node certificate, and the control plane (Envoy, gateway, scheduler, auth) in the root namespace.

The nodes' endpoints register with the scheduler across the veth links; the scheduler follows both monitors.
A node whose link is cut goes silent: it stops getting work, the stream running on it fails at once, and
it rejoins when its link comes back. Skipped, with the reason, where namespaces cannot be made.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

from orchestrator.mesh_plan import IDENTITIES
from services.shared.certs import dev_identity, ensure_dev_certs, load_certificate
from services.shared.status_details import details_of
from tests import netns
from tests.conftest import track, untrack
from tests.e2e.conftest import Mesh, running_mesh
from tests.otlp_receiver import OtlpReceiver
from tests.ports import free_port_block
from tests.support import COUNTING_PROMPT, ServiceProcess, write_model_config

MONITOR_PORT, INFERENCE_PORT = 50071, 50061
# A node cut off is dropped within 2 s (three silent half-second intervals); this bound holds on a busy
# machine, and the test prints what it measured.
DROPPED_WITHIN_SECONDS = 10.0
REJOINS_WITHIN_SECONDS = 60.0
LONG = pb.GenerateRequest(prompt=COUNTING_PROMPT, max_tokens=900, temperature=0.0)


@dataclass
class Node:
    host: netns.Host
    monitor: ServiceProcess
    inference: ServiceProcess

    @property
    def device_id(self) -> str:
        return f"{self.host.name}/host"


def _node_flags(host: netns.Host, identity: Path, service: str) -> list[str]:
    tls = dev_identity(identity, service)
    return ["--node-name", host.name, "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca)]


def start_node(host: netns.Host, directory: Path, ca_dir: Path, config: Path, scheduler_port: int) -> Node:
    """A node's processes in its namespace, with a certificate of its own from the mesh's CA."""
    node_dir = directory / host.name
    node_dir.mkdir()
    for name in ("ca.pem", "ca-key.pem"):
        shutil.copy(ca_dir / name, node_dir / name)
    ensure_dev_certs(node_dir, ["gpu-monitor", "inference"])
    monitor = ServiceProcess(f"{host.name} gpu-monitor", ["-m", "services.gpu_monitor",
        "--listen", f"{host.address}:{MONITOR_PORT}", "--metrics-listen", f"{host.address}:9466",
        *_node_flags(host, node_dir, "gpu-monitor")], node_dir / "gpu-monitor.log", within=host.within)  # fmt: skip
    inference = ServiceProcess(f"{host.name} inference", ["-m", "services.inference", "--config", str(config),
        "--listen", f"{host.address}:{INFERENCE_PORT}", "--metrics-listen", f"{host.address}:9467",
        "--scheduler", f"{host.root_address}:{scheduler_port}",
        *_node_flags(host, node_dir, "inference")], node_dir / "inference.log", within=host.within)  # fmt: skip
    return Node(host, track(monitor), track(inference))


@dataclass
class Cluster:
    mesh: Mesh
    nodes: list[Node]

    def state(self) -> scheduler_pb2.GetSchedulerStateResponse:
        with self.mesh.channel("scheduler", "cli") as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            return stub.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=10)

    def serving_nodes(self) -> set[str]:
        serving = scheduler_pb2.ENDPOINT_HEALTH_SERVING
        return {e.endpoint.node_name for e in self.state().endpoints if e.health == serving}

    def busy_nodes(self) -> set[str]:
        return {e.endpoint.node_name for e in self.state().endpoints if e.used_slots > 0}

    def heard_devices(self) -> set[str]:
        return {device.device_id for device in self.state().devices if not device.silent}

    def generate(self, request: pb.GenerateRequest, channel: grpc.Channel) -> Iterator[pb.GenerateResponse]:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        return stub.Generate(request, timeout=120, metadata=self.mesh.grpc_auth)


def until(condition: Callable[[], bool], what: str, timeout: float) -> float:
    """Polls the mesh's state, which changes on its own schedule; returns how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not {what} after {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("nodes")
    config = write_model_config(directory, context_length=1024, slots=2)
    ca_dir = directory / "state" / "certs"
    ensure_dev_certs(ca_dir, list(IDENTITIES))
    scheduler_port = free_port_block(1)
    try:
        made = netns.hosts(2)
        hosts = made.__enter__()
    except netns.NamespacesUnavailable as error:
        pytest.skip(f"no network namespaces here: {error}")
    nodes: list[Node] = []
    try:
        nodes = [start_node(host, directory, ca_dir, config, scheduler_port) for host in hosts]
        env = {
            "MESHSERVE_LOCAL_NODE": "false",
            "MESHSERVE_MONITORS": json.dumps([f"{node.host.address}:{MONITOR_PORT}" for node in nodes]),
            # The nodes reach the scheduler over their links to the root namespace.
            "MESHSERVE_SCHEDULER_HOST": "0.0.0.0",
            "MESHSERVE_SCHEDULER_PORT": str(scheduler_port),
        }
        with running_mesh(directory, config, traces, env) as mesh:
            cluster = Cluster(mesh, nodes)
            until(lambda: cluster.serving_nodes() == {"node-1", "node-2"}, "both nodes serving", 120)
            yield cluster
    finally:
        for node in nodes:
            for process in (node.inference, node.monitor):
                process.terminate()
                untrack(process)
        made.__exit__(None, None, None)


def test_each_node_has_its_own_certificate_device_and_endpoint(cluster: Cluster) -> None:
    state = cluster.state()
    endpoints = {e.endpoint.node_name: e.endpoint for e in state.endpoints}
    assert {name: endpoint.device_id for name, endpoint in endpoints.items()} == {
        node.host.name: node.device_id for node in cluster.nodes
    }
    assert {name: endpoint.address for name, endpoint in endpoints.items()} == {
        node.host.name: f"{node.host.address}:{INFERENCE_PORT}" for node in cluster.nodes
    }
    assert {(d.device_id, d.node_name) for d in state.devices} == {(n.device_id, n.host.name) for n in cluster.nodes}
    # Each node's certificate is its own key, from the mesh's CA, under the role's identity.
    node_dirs = [node.inference.log_path.parent for node in cluster.nodes]
    certificates = [load_certificate(dev_identity(node_dir, "inference").cert) for node_dir in node_dirs]
    assert len({certificate.public_key().public_numbers() for certificate in certificates}) == 2


def placed_on_every_node(cluster: Cluster, channel: grpc.Channel) -> set[str]:
    """The nodes two requests at once run on: the least loaded endpoint takes each, so one on each node."""
    streams = [cluster.generate(LONG, channel) for _ in cluster.nodes]
    try:
        for stream in streams:
            assert next(stream).text
        return cluster.busy_nodes()
    finally:
        for stream in streams:
            stream.cancel()
        until(lambda: cluster.busy_nodes() == set(), "both slots freed", 60)


def test_work_is_placed_on_every_node(cluster: Cluster) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.mesh.port('edge_http')}") as channel:
        assert placed_on_every_node(cluster, channel) == {"node-1", "node-2"}


def test_a_node_cut_off_stops_getting_work_its_stream_fails_fast_and_it_rejoins(cluster: Cluster) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.mesh.port('edge_http')}") as channel:
        stream = cluster.generate(LONG, channel)
        assert next(stream).text
        (busy,) = cluster.busy_nodes()
        cut = next(node for node in cluster.nodes if node.host.name == busy)
        other = next(node for node in cluster.nodes if node is not cut)
        cut.host.cut()
        try:
            cut_at = time.monotonic()
            with pytest.raises(grpc.RpcError) as failed:
                for _ in stream:
                    pass
            failed_after = time.monotonic() - cut_at
            left = {other.host.name}
            dropped_after = until(lambda: cluster.serving_nodes() == left, "dropped", DROPPED_WITHIN_SECONDS)
            until(lambda: cut.device_id not in cluster.heard_devices(), "its device silent", DROPPED_WITHIN_SECONDS)
            details = details_of(failed.value)
            assert details.code == grpc.StatusCode.UNAVAILABLE and details.reason == "ENDPOINT_LOST", details
            assert failed_after < DROPPED_WITHIN_SECONDS
            print(f"\n{cut.host.name} cut off: its stream failed after {failed_after:.2f}s; "
                  f"it was dropped after {dropped_after + failed_after:.2f}s")  # fmt: skip
            # New work goes to the node that is left.
            replies = list(cluster.generate(pb.GenerateRequest(prompt="Hello", max_tokens=4), channel))
            assert replies[-1].usage.output_tokens == 4
        finally:
            cut.host.rejoin()
        both = {"node-1", "node-2"}
        rejoined_after = until(lambda: cluster.serving_nodes() == both, "rejoined", REJOINS_WITHIN_SECONDS)
        until(lambda: cut.device_id in cluster.heard_devices(), "its device heard again", REJOINS_WITHIN_SECONDS)
        print(f"{cut.host.name} rejoined {rejoined_after:.2f}s after its link came back")
        assert placed_on_every_node(cluster, channel) == {"node-1", "node-2"}
