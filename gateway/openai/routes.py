"""The OpenAI API's routes: request body in, the gateway called, OpenAI's objects or events out.

Every refusal the gateway makes before the first token (unknown model, bad parameter, queue full) is an
HTTP error with OpenAI's envelope. Once a stream has begun, a failure is sent as an error event, then
`data: [DONE]`: a stream never just stops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from meshserve.gateway.v1 import gateway_pb2 as pb
from opentelemetry import trace
from starlette.exceptions import HTTPException

from gateway.openai.errors import OpenAIError, bad_request, from_mesh_error, from_validation_errors
from gateway.openai.metrics import OPENAI_REQUESTS
from gateway.openai.responses import CompletionWriter
from gateway.openai.schema import ChatCompletionRequest, CompletionRequest
from gateway.openai.streaming import (
    ClientGone,
    describe_outcome,
    events,
    gather,
    requests_log,
    unless_the_client_leaves,
)
from gateway.openai.translate import PRIORITY_HEADER, Translated, chat_request, completion_request, priority_of
from services.shared.errors import MeshError
from services.shared.identity import IDENTITY_HEADER
from telemetry.genai import operation_name, request_attributes
from telemetry.spans import TRACE_ID_HEADER, trace_id_of

log = logging.getLogger("gateway.openai")

TIMEOUT_HEADER = "x-meshserve-timeout-seconds"
PROVIDER = "meshserve"
# nginx's status for a request whose client closed the connection first; it is only logged, never sent.
CLIENT_CLOSED_REQUEST = 499


class Gateway(Protocol):
    def generate(
        self, request: pb.GenerateRequest, timeout: float, identity: str
    ) -> AsyncIterator[pb.GenerateResponse]: ...

    async def models(self, identity: str, timeout: float = 5.0) -> pb.ListModelsResponse: ...


def create_app(
    gateway: Gateway,
    request_timeout_seconds: float,
    on_refusal: Callable[[Request, OpenAIError], None] | None = None,
    batches: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """The front's routes. `on_refusal` hears of every refusal the front makes itself (the audit log);
    `batches` adds the Files and Batches routes."""
    app = FastAPI(title="meshserve OpenAI API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ready = False
    app.state.on_refusal = on_refusal
    _add_error_handlers(app)
    if batches is not None:
        batches(app)

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
    async def list_models(request: Request) -> dict[str, Any]:
        models = await _models(gateway, _identity(request))
        OPENAI_REQUESTS.labels("models", "200").inc()
        return {"object": "list", "data": [_model_object(model.name) for model in models]}

    @app.get("/v1/models/{model}")
    async def get_model(model: str, request: Request) -> dict[str, Any]:
        if model not in {known.name for known in await _models(gateway, _identity(request))}:
            raise OpenAIError(404, f"The model {model!r} does not exist", param="model", code="model_not_found")
        OPENAI_REQUESTS.labels("models", "200").inc()
        return _model_object(model)

    async def _complete(endpoint, body, translated: Translated, writer, with_logprobs, request: Request) -> Response:
        _describe(body, translated.request, endpoint)
        stream = gateway.generate(translated.request, _timeout(request, request_timeout_seconds), _identity(request))
        try:
            if body.stream:
                # The first message comes before the answer starts, so a refusal is still an HTTP error.
                first = await unless_the_client_leaves(request, anext(stream))
            else:
                await unless_the_client_leaves(request, gather(stream, writer))
        except MeshError as error:
            await stream.aclose()
            raise from_mesh_error(error, translated.param_aliases) from None
        except ClientGone:
            await stream.aclose()
            requests_log.info("%s cancelled: the client left before the answer began", endpoint)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        headers = {TRACE_ID_HEADER: trace_id_of(trace.get_current_span())}
        OPENAI_REQUESTS.labels(endpoint, "200").inc()
        if body.stream:
            sse = events(endpoint, stream, first, writer, with_logprobs, translated.param_aliases)
            return StreamingResponse(sse, media_type="text/event-stream", headers=headers)
        describe_outcome(endpoint, writer)
        return JSONResponse(writer.completed(with_logprobs), headers=headers)

    return app


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


def _identity(request: Request) -> str:
    # Set by the edge, which removed whatever the client sent under that name; the gateway checks it.
    return request.headers.get(IDENTITY_HEADER, "")


async def _models(gateway: Gateway, identity: str) -> list[pb.Model]:
    try:
        return list((await gateway.models(identity)).models)
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
    endpoint = _endpoint_of(request.url.path)
    OPENAI_REQUESTS.labels(endpoint, str(error.status)).inc()
    on = f" on {error.param}" if error.param else ""
    requests_log.info("%s refused: %s %s%s (%s)", endpoint, error.status, error.code or error.type, on, error.message)
    if not error.from_gateway and request.app.state.on_refusal is not None:
        request.app.state.on_refusal(request, error)
    # A refused request names its trace too, so its client can find out what happened to it.
    headers = {**error.headers(), TRACE_ID_HEADER: trace_id_of(trace.get_current_span())}
    return JSONResponse(error.envelope(), status_code=error.status, headers=headers)


def _endpoint_of(path: str) -> str:
    # A fixed set of labels, whatever paths clients send.
    for prefix, endpoint in (("/v1/chat/completions", "chat.completions"), ("/v1/completions", "completions"),
                             ("/v1/models", "models"), ("/v1/files", "files"), ("/v1/batches", "batches")):  # fmt: skip
        if path.startswith(prefix):
            return endpoint
    return "other"
