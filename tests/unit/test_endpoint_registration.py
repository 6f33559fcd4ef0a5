"""Both ends of endpoint registration in one process, over mTLS: the inference side's SchedulerRegistration
and the scheduler's registry, servicer and state machine, with an endpoint that answers health and model info.

Real grpc.aio servers on loopback ports and real certificates; the engine is a fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshserve.inference.v1 import inference_pb2 as ipb
from meshserve.inference.v1 import inference_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2 as pb
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from gateway.clients import SchedulerClient
from gateway.core.ports import SlotAsk
from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.model import EndpointSnapshot
from orchestrator.scheduler.core.scheduler import SlotScheduler
from orchestrator.scheduler.endpoint_watcher import EndpointWatcher
from orchestrator.scheduler.monitors import MonitorDirectory
from orchestrator.scheduler.registry import EndpointRegistry
from orchestrator.scheduler.servicer import REGISTER_ENDPOINT, SchedulerServicer
from orchestrator.scheduler.state_report import StateReporter
from services.inference.registration import Registration, SchedulerRegistration
from services.shared.authorization import SpiffeAuthorizationInterceptor
from services.shared.certs import ensure_dev_certs
from services.shared.channels import open_channel
from services.shared.domain import Priority
from services.shared.grpc_server import add_health_and_reflection, bind, create_server
from services.shared.tls import TlsFiles
from tests.support import until

# Long enough that no test's own steps, on a busy machine, are taken for silence; the silence test beats itself.
HEARTBEAT_SECONDS = 2.0
SILENCE_TEST_HEARTBEAT_SECONDS = 0.2


class ModelInfoOnly(inference_pb2_grpc.InferenceServiceServicer):
    async def GetModelInfo(self, request: ipb.GetModelInfoRequest, context) -> ipb.GetModelInfoResponse:
        info = ipb.ModelInfo(name="m", engine="fake", state=ipb.MODEL_STATE_READY, total_slots=2, context_length=64)
        return ipb.GetModelInfoResponse(model=info)


@dataclass
class Scheduler:
    """The scheduler's shell and servicer over a fresh state machine, as a scheduler process starts."""

    broker: SlotBroker
    registry: EndpointRegistry
    watcher: EndpointWatcher
    server: grpc.aio.Server
    address: str

    @classmethod
    async def start(
        cls, certs: dict[str, TlsFiles], heartbeat_seconds: float, address: str = "127.0.0.1:0"
    ) -> Scheduler:
        broker = SlotBroker(SlotScheduler([], 10, models=["m"]))
        watcher = EndpointWatcher(broker, certs["scheduler"])
        registry = EndpointRegistry(broker, watcher, lambda model: None, heartbeat_seconds=heartbeat_seconds)
        reporter = StateReporter(broker, watcher, MonitorDirectory(broker, [], None))
        server = create_server([SpiffeAuthorizationInterceptor(["gateway"], {REGISTER_ENDPOINT: ["inference"]})])
        servicer = SchedulerServicer(broker, reporter, registry)
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, server)
        port = bind(server, address, certs["scheduler"])
        await server.start()
        return cls(broker, registry, watcher, server, f"127.0.0.1:{port}")

    async def stop(self) -> None:
        self.watcher.stop()
        await self.server.stop(None)


@dataclass
class Mesh:
    scheduler: Scheduler
    endpoint_address: str
    certs: dict[str, TlsFiles]
    heartbeat_seconds: float

    @property
    def broker(self) -> SlotBroker:
        return self.scheduler.broker

    @property
    def registry(self) -> EndpointRegistry:
        return self.scheduler.registry

    @property
    def scheduler_address(self) -> str:
        return self.scheduler.address

    async def restart_scheduler(self) -> None:
        """The scheduler dies and a new one, knowing nothing, starts on the same address."""
        await self.scheduler.stop()
        self.scheduler = await Scheduler.start(self.certs, self.heartbeat_seconds, self.scheduler.address)

    def endpoints(self) -> tuple[EndpointSnapshot, ...]:
        return self.broker.snapshot().endpoints

    def serving(self) -> bool:
        return any(endpoint.available for endpoint in self.endpoints())

    def registration(self, running: Callable[[], int] = lambda: 0) -> SchedulerRegistration:
        who = Registration("m", self.endpoint_address, "node-1", "", total_slots=2)
        return SchedulerRegistration(self.scheduler_address, self.certs["inference"], who, running)


async def start(server: grpc.aio.Server, tls: TlsFiles) -> str:
    port = bind(server, "127.0.0.1:0", tls)
    await server.start()
    return f"127.0.0.1:{port}"


@pytest.fixture()
async def mesh(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Mesh]:
    heartbeat_seconds = getattr(request, "param", HEARTBEAT_SECONDS)
    certs = ensure_dev_certs(tmp_path, ["scheduler", "inference", "gateway"])
    endpoint = create_server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(ModelInfoOnly(), endpoint)
    health = await add_health_and_reflection(endpoint, [])
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    endpoint_address = await start(endpoint, certs["inference"])

    mesh = Mesh(await Scheduler.start(certs, heartbeat_seconds), endpoint_address, certs, heartbeat_seconds)
    try:
        yield mesh
    finally:
        await mesh.scheduler.stop()
        await endpoint.stop(None)


async def running(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_endpoint_joins_with_the_work_it_runs_serves_once_healthy_and_leaves_when_it_stops(mesh: Mesh) -> None:
    engine_running = {"count": 1}
    task = asyncio.create_task(mesh.registration(lambda: engine_running["count"]).run())
    try:
        await until(mesh.serving, "registered and serving")
        (endpoint,) = mesh.endpoints()
        assert endpoint.spec.endpoint_id == f"m@{mesh.endpoint_address}"
        assert (endpoint.spec.node_name, endpoint.spec.total_slots, endpoint.used_slots) == ("node-1", 2, 1)
        engine_running["count"] = 0
        await until(lambda: mesh.endpoints()[0].used_slots == 0, "the orphan freed by a heartbeat")
    finally:
        await running(task)
    await until(lambda: mesh.endpoints() == (), "dropped once its registration closed")


async def beat(call: grpc.aio.StreamStreamCall, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await call.write(pb.RegisterEndpointRequest(heartbeat=pb.EndpointHeartbeat(running_requests=1)))
        await call.read()
        await asyncio.sleep(interval)  # the heartbeat's pace


@pytest.mark.parametrize("mesh", [SILENCE_TEST_HEARTBEAT_SECONDS], indirect=True)
async def test_an_endpoint_registers_again_with_a_restarted_scheduler_bringing_its_running_work(mesh: Mesh) -> None:
    task = asyncio.create_task(mesh.registration(lambda: 1).run())
    try:
        await until(mesh.serving, "registered and serving")
        await mesh.restart_scheduler()
        assert mesh.endpoints() == ()
        await until(mesh.serving, "registered again")
        assert [endpoint.used_slots for endpoint in mesh.endpoints()] == [1]
    finally:
        await running(task)


@pytest.mark.parametrize("mesh", [SILENCE_TEST_HEARTBEAT_SECONDS], indirect=True)
async def test_an_endpoint_that_falls_silent_is_dropped_and_the_slot_held_on_it_is_lost(mesh: Mesh) -> None:
    async with open_channel(mesh.scheduler_address, mesh.certs["inference"], peer="scheduler") as channel:
        call = scheduler_pb2_grpc.SchedulerServiceStub(channel).RegisterEndpoint()
        await call.write(mesh.registration()._first_message())
        ack = await call.read()
        interval = ack.heartbeat_interval.ToNanoseconds() / 1e9
        assert interval == SILENCE_TEST_HEARTBEAT_SECONDS
        stop = asyncio.Event()
        beating = asyncio.create_task(beat(call, interval, stop))
        await until(mesh.serving, "serving")
        gateway = SchedulerClient(mesh.scheduler_address, mesh.certs["gateway"])
        try:
            async with gateway.acquire(SlotAsk("m", Priority.NORMAL, "alice", "r1"), timeout=30) as slot:
                stop.set()
                await beating
                # No heartbeat follows: three intervals on, the scheduler drops the endpoint and says so.
                reason = await asyncio.wait_for(slot.lost(), timeout=30)
                assert "left the mesh" in reason and "silent" in reason
                assert mesh.endpoints() == ()
        finally:
            await gateway.close()
        assert await call.read() is grpc.aio.EOF


async def test_a_second_registration_from_the_same_address_replaces_the_first(mesh: Mesh) -> None:
    async with open_channel(mesh.scheduler_address, mesh.certs["inference"], peer="scheduler") as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        first, second = stub.RegisterEndpoint(), stub.RegisterEndpoint()
        message = mesh.registration(lambda: 0)._first_message()
        await first.write(message)
        await first.read()
        message.registration.running_requests = 2
        await second.write(message)
        await second.read()
        assert await first.read() is grpc.aio.EOF
        assert [e.used_slots for e in mesh.endpoints()] == [2]
        assert mesh.registry.registered == [f"m@{mesh.endpoint_address}"]
        second.cancel()


@pytest.mark.parametrize(
    ("identity", "method", "allowed"),
    [("inference", "register", True), ("gateway", "register", False), ("inference", "state", False)],
)
async def test_only_inference_may_register_and_it_may_do_nothing_else(
    mesh: Mesh, identity: str, method: str, allowed: bool
) -> None:
    async with open_channel(mesh.scheduler_address, mesh.certs[identity], peer="scheduler") as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        try:
            if method == "register":
                call = stub.RegisterEndpoint()
                await call.write(mesh.registration()._first_message())
                await call.read()
                call.cancel()
            else:
                await stub.GetSchedulerState(pb.GetSchedulerStateRequest(), timeout=10)
        except grpc.aio.AioRpcError as error:
            assert not allowed and error.code() is grpc.StatusCode.PERMISSION_DENIED
        else:
            assert allowed


async def test_a_bad_registration_is_refused_with_the_reason(mesh: Mesh) -> None:
    async with open_channel(mesh.scheduler_address, mesh.certs["inference"], peer="scheduler") as channel:
        call = scheduler_pb2_grpc.SchedulerServiceStub(channel).RegisterEndpoint()
        message = mesh.registration()._first_message()
        message.registration.endpoint.address = "no-port"
        await call.write(message)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "HOST:PORT" in refused.value.details()
    assert mesh.endpoints() == ()


async def test_the_scheduler_checks_its_peers_by_role_so_an_endpoint_on_any_address_is_reached(mesh: Mesh) -> None:
    """The scheduler dials the endpoint by whatever address it registered; the certificate names the role."""
    async with open_channel(mesh.endpoint_address, mesh.certs["scheduler"], peer="inference") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    async with open_channel(mesh.endpoint_address, mesh.certs["scheduler"], peer="gateway") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as wrong_role:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert wrong_role.value.code() is grpc.StatusCode.UNAVAILABLE
