"""The OpenAI API's routes: request body in, the gateway called, OpenAI's objects or events out.

Every refusal the gateway makes before the first token (unknown model, bad parameter, queue full) is an
HTTP error with OpenAI's envelope. Once a stream has begun, a failure is sent as an error event, then
`data: [DONE]`: a stream never just stops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from meshserve.gateway.v1 import gateway_pb2 as pb
from opentelemetry import trace
from starlette.exceptions import HTTPException

from gateway.openai.errors import OpenAIError, bad_request, from_mesh_error, from_validation_errors
from gateway.openai.metrics import OPENAI_REQUESTS, OPENAI_STREAM_ERRORS
from gateway.openai.responses import CompletionWriter
from gateway.openai.schema import ChatCompletionRequest, CompletionRequest
from gateway.openai.translate import PRIORITY_HEADER, Translated, chat_request, completion_request, priority_of
from services.shared.errors import MeshError
from telemetry.genai import operation_name, request_attributes, response_attributes
from telemetry.spans import TRACE_ID_HEADER, trace_id_of

log = logging.getLogger("gateway.openai")

TIMEOUT_HEADER = "x-meshserve-timeout-seconds"
PROVIDER = "meshserve"
_DONE = "data: [DONE]\n\n"


class Gateway(Protocol):
    def generate(self, request: pb.GenerateRequest, timeout: float) -> AsyncIterator[pb.GenerateResponse]: ...

    async def models(self, timeout: float = 5.0) -> pb.ListModelsResponse: ...


def create_app(gateway: Gateway, request_timeout_seconds: float) -> FastAPI:
    app = FastAPI(title="meshserve OpenAI API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ready = False
    _add_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok\n" if app.state.ready else "not ready\n", status_code=200 if app.state.ready else 503)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        translated = chat_request(body, priority_of(request.headers.get(PRIORITY_HEADER)))
        writer = CompletionWriter(chat=True, include_usage=_include_usage(body))
        return await _complete("chat.completions", body, translated, writer, body.logprobs, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        translated = completion_request(body, priority_of(request.headers.get(PRIORITY_HEADER)))
        writer = CompletionWriter(
            chat=False, include_usage=_include_usage(body), prompt_chars=len(translated.request.prompt)
        )
        return await _complete("completions", body, translated, writer, body.logprobs is not None, request)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        models = await _models(gateway)
        OPENAI_REQUESTS.labels("models", "200").inc()
        return {"object": "list", "data": [_model_object(model.name) for model in models]}

    @app.get("/v1/models/{model}")
    async def get_model(model: str) -> dict[str, Any]:
        if model not in {known.name for known in await _models(gateway)}:
            raise OpenAIError(404, f"The model {model!r} does not exist", param="model", code="model_not_found")
        OPENAI_REQUESTS.labels("models", "200").inc()
        return _model_object(model)

    async def _complete(endpoint, body, translated: Translated, writer, with_logprobs, request: Request) -> Response:
        _describe(body, translated.request, endpoint)
        timeout = _timeout(request, request_timeout_seconds)
        stream = gateway.generate(translated.request, timeout)
        try:
            first = await anext(stream)
        except MeshError as error:
            await stream.aclose()
            raise from_mesh_error(error, translated.param_aliases) from None
        headers = {TRACE_ID_HEADER: trace_id_of(trace.get_current_span())}
        OPENAI_REQUESTS.labels(endpoint, "200").inc()
        if body.stream:
            events = _events(endpoint, stream, first, writer, with_logprobs, translated.param_aliases)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        async with aclosing(stream):
            writer.gather(first)
            try:
                async for message in stream:
                    writer.gather(message)
            except MeshError as error:
                raise from_mesh_error(error, translated.param_aliases) from None
        answer = writer.completed(with_logprobs)
        _describe_answer(answer)
        return JSONResponse(answer, headers=headers)

    return app


async def _events(
    endpoint: str,
    stream: AsyncIterator[pb.GenerateResponse],
    first: pb.GenerateResponse,
    writer: CompletionWriter,
    with_logprobs: bool,
    aliases: dict[str, str],
) -> AsyncIterator[str]:
    """The stream's server-sent events; closing it (the client went away) cancels the generation."""
    async with aclosing(stream):
        try:
            for chunk in writer.chunks(first, with_logprobs):
                yield _event(chunk)
            async for message in stream:
                for chunk in writer.chunks(message, with_logprobs):
                    yield _event(chunk)
        except MeshError as error:
            failure = from_mesh_error(error, aliases)
            OPENAI_STREAM_ERRORS.labels(endpoint, failure.code or "unknown").inc()
            log.warning("stream failed after it began: %s", error)
            yield _event(failure.envelope())
        except Exception:
            # A failure of the front itself still ends the stream in words the client can read.
            log.exception("stream failed in the OpenAI front")
            OPENAI_STREAM_ERRORS.labels(endpoint, "internal_error").inc()
            yield _event(OpenAIError(500, "internal error", "server_error", code="internal_error").envelope())
    yield _DONE


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _include_usage(body: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(body.stream and body.stream_options and body.stream_options.include_usage)


def _timeout(request: Request, ceiling: float) -> float:
    asked = request.headers.get(TIMEOUT_HEADER)
    if asked is None:
        return ceiling
    try:
        seconds = float(asked)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise bad_request(f"{TIMEOUT_HEADER} must be a positive number of seconds", param=TIMEOUT_HEADER)
    return min(seconds, ceiling)


async def _models(gateway: Gateway) -> list[pb.Model]:
    try:
        return list((await gateway.models()).models)
    except MeshError as error:
        raise from_mesh_error(error) from None


def _model_object(name: str) -> dict[str, Any]:
    # OpenAI's `created` is when the model was made; a configured model has no such date, so the epoch.
    return {"id": name, "object": "model", "created": 0, "owned_by": "meshserve"}


def _describe(body: ChatCompletionRequest | CompletionRequest, request: pb.GenerateRequest, endpoint: str) -> None:
    span = trace.get_current_span()
    span.set_attributes(
        request_attributes(
            operation_name(isinstance(body, ChatCompletionRequest)),
            PROVIDER,
            request.model,
            request.max_tokens if request.HasField("max_tokens") else None,
            request.temperature if request.HasField("temperature") else None,
            request.top_p if request.HasField("top_p") else None,
        )
    )
    if body.user:
        # Who the client says its end user is: recorded, never taken as identity.
        span.set_attribute("user.id", body.user)
    if unknown := body.unknown_fields():
        log.debug("%s: ignoring fields OpenAI's schema or meshserve does not know: %s", endpoint, ", ".join(unknown))


def _describe_answer(answer: dict[str, Any]) -> None:
    usage, (choice,) = answer["usage"], answer["choices"]
    if usage and choice["finish_reason"]:
        trace.get_current_span().set_attributes(
            response_attributes(
                answer["model"], choice["finish_reason"], usage["prompt_tokens"], usage["completion_tokens"]
            )
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, error: OpenAIError) -> JSONResponse:
        return _error_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(request, from_validation_errors(list(error.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return _error_response(request, OpenAIError(error.status_code, str(error.detail), kind))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("the OpenAI front failed on %s %s", request.method, request.url.path)
        return _error_response(request, OpenAIError(500, "internal error", "server_error", code="internal_error"))


def _error_response(request: Request, error: OpenAIError) -> JSONResponse:
    OPENAI_REQUESTS.labels(_endpoint_of(request.url.path), str(error.status)).inc()
    return JSONResponse(error.envelope(), status_code=error.status, headers=error.headers())


def _endpoint_of(path: str) -> str:
    # A fixed set of labels, whatever paths clients send.
    for prefix, endpoint in (("/v1/chat/completions", "chat.completions"), ("/v1/completions", "completions"),
                             ("/v1/models", "models")):  # fmt: skip
        if path.startswith(prefix):
            return endpoint
    return "other"
