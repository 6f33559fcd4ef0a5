"""The gRPC face of the inference core: proto in, core call, proto out. Errors are mapped by the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from meshserve.inference.v1 import inference_pb2 as pb
from meshserve.inference.v1 import inference_pb2_grpc

from services.inference.convert import to_generate_response, to_generation_request, to_model_info
from services.inference.core.service import InferenceCore

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, core: InferenceCore, model_name: str) -> None:
        self._core = core
        self._model_name = model_name

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        generation = to_generation_request(request)
        async with aclosing(self._core.generate(generation, request.model)) as chunks:
            async for chunk in chunks:
                yield to_generate_response(chunk)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        return pb.GetModelInfoResponse(model=to_model_info(self._model_name, self._core.status()))
