"""The gRPC face of the inference core: proto in, core call, proto out. Errors are mapped by the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from meshserve.inference.v1 import inference_pb2 as pb
from meshserve.inference.v1 import inference_pb2_grpc

from services.inference.convert import to_generate_response, to_generation_request, to_model_info
from services.inference.core.service import InferenceCore
from services.inference.observability import traced_generation

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, core: InferenceCore, model_name: str, record_content: bool = False) -> None:
        self._core = core
        self._model_name = model_name
        self._record_content = record_content

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        generation = to_generation_request(request)
        stream = self._core.generate(generation, request.model)
        traced = traced_generation(generation, self._model_name, stream, self._record_content)
        async with aclosing(traced) as chunks:
            async for chunk in chunks:
                yield to_generate_response(chunk)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        return pb.GetModelInfoResponse(model=to_model_info(self._model_name, self._core.status()))

    async def LoadModel(self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext) -> pb.LoadModelResponse:
        return pb.LoadModelResponse(model=to_model_info(self._model_name, await self._core.load()))

    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadModelResponse:
        return pb.UnloadModelResponse(model=to_model_info(self._model_name, await self._core.unload()))
