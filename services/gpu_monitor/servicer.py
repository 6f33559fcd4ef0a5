"""The gRPC face of the GPU monitor core: proto in, core call, proto out. Errors are mapped by the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from meshserve.gpumonitor.v1 import gpumonitor_pb2 as pb
from meshserve.gpumonitor.v1 import gpumonitor_pb2_grpc

from services.gpu_monitor.convert import to_requested_interval, to_snapshot_response, to_watch_response
from services.gpu_monitor.core.monitor import GpuMonitorCore

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GpuMonitorService"].full_name


class GpuMonitorServicer(gpumonitor_pb2_grpc.GpuMonitorServiceServicer):
    def __init__(self, core: GpuMonitorCore) -> None:
        self._core = core

    async def GetSnapshot(
        self, request: pb.GetSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSnapshotResponse:
        return to_snapshot_response(await self._core.snapshot())

    async def WatchReadings(
        self, request: pb.WatchReadingsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchReadingsResponse]:
        interval_seconds = to_requested_interval(request)
        async with aclosing(self._core.watch(interval_seconds)) as snapshots:
            async for snapshot in snapshots:
                yield to_watch_response(snapshot)
