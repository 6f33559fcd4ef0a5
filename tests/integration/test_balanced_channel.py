"""A channel to a comma-separated list of replicas, over the mesh's mTLS: calls reach every replica, and go
on reaching the others when one stops."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.shared.certs import ensure_dev_certs
from services.shared.channels import balanced_target, open_channel
from services.shared.tls import server_credentials

# Each replica answers for this service with its own status, which tells the test who answered.
PROBE = "which-replica"
STATUSES = (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)


async def replica(certs: dict, status: int) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set(PROBE, status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certs["gateway"]))
    await server.start()
    return server, f"127.0.0.1:{port}"


async def answers(channel: grpc.aio.Channel, calls: int) -> Counter:
    stub = health_pb2_grpc.HealthStub(channel)
    replies = [await stub.Check(health_pb2.HealthCheckRequest(service=PROBE), timeout=10) for _ in range(calls)]
    return Counter(reply.status for reply in replies)


async def test_calls_are_spread_over_every_replica_and_skip_one_that_stopped(tmp_path: Path) -> None:
    certs = ensure_dev_certs(tmp_path, ["gateway", "openai"])
    servers = [await replica(certs, status) for status in STATUSES]
    try:
        async with open_channel(",".join(address for _, address in servers), certs["openai"]) as channel:
            assert set(await answers(channel, 8)) == set(STATUSES)
            await servers[1][0].stop(grace=None)
            # grpc's round_robin notices the closed connection and leaves the replica out.
            assert set(await answers(channel, 8)) == {STATUSES[0]}
    finally:
        for server, _ in servers:
            await server.stop(grace=None)


def test_one_address_is_the_address_itself() -> None:
    assert balanced_target("127.0.0.1:50041") == ("127.0.0.1:50041", ())
    target, options = balanced_target("127.0.0.1:1, 127.0.0.1:2")
    assert target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert dict(options) == {"grpc.lb_policy_name": "round_robin", "grpc.default_authority": "127.0.0.1"}
