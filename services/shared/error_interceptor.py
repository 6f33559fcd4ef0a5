"""The one place where errors become gRPC statuses.

Every handler is wrapped so that a MeshError becomes google.rpc.Status with an ErrorInfo (and a
RetryInfo where it has a delay), and anything else becomes INTERNAL without a traceback sent to the
client. It also guards request decoding: a message that does not parse (for example a string field
holding invalid UTF-8) is INVALID_ARGUMENT, where grpc would otherwise answer INTERNAL.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from services.shared.errors import MeshError, invalid_argument
from services.shared.status_details import to_grpc_status

log = logging.getLogger(__name__)


class _UndecodableRequest:
    """Stands in for a request message that failed to parse, so the handler can refuse it."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        wrapped = {
            "request_deserializer": _guarded_deserializer(handler.request_deserializer),
        }
        if handler.unary_unary:
            wrapped["unary_unary"] = _wrap_unary(handler.unary_unary, method, streaming_requests=False)
        elif handler.unary_stream:
            wrapped["unary_stream"] = _wrap_stream(handler.unary_stream, method, streaming_requests=False)
        elif handler.stream_unary:
            wrapped["stream_unary"] = _wrap_unary(handler.stream_unary, method, streaming_requests=True)
        elif handler.stream_stream:
            wrapped["stream_stream"] = _wrap_stream(handler.stream_stream, method, streaming_requests=True)
        return handler._replace(**wrapped)


async def responses_of(outcome: Any) -> AsyncIterator[Any]:
    """A streaming handler either yields its responses or is a coroutine that writes them with
    context.write() (as grpc's own health servicer does); both look like an async iterator here."""
    if inspect.isawaitable(outcome):
        await outcome
        return
    async for response in outcome:
        yield response


def _guarded_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, UnicodeDecodeError, ValueError) as error:
            return _UndecodableRequest(error)

    return deserialize


def _refuse_if_undecodable(request: Any) -> None:
    if isinstance(request, _UndecodableRequest):
        raise invalid_argument(
            "MALFORMED_REQUEST",
            "the request message could not be decoded; string fields must hold valid UTF-8",
        )


async def _checked_requests(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        _refuse_if_undecodable(request)
        yield request


def _prepare(request: Any, streaming_requests: bool) -> Any:
    if streaming_requests:
        return _checked_requests(request)
    _refuse_if_undecodable(request)
    return request


async def _abort(context: grpc.aio.ServicerContext, error: Exception, method: str) -> None:
    if isinstance(error, MeshError):
        status = to_grpc_status(error)
        await context.abort(status.code, status.details, status.trailing_metadata)
    log.exception("unexpected error in %s", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]], method: str, streaming_requests: bool
) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(_prepare(request, streaming_requests), context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - this is the one place errors are mapped
            await _abort(context, error, method)

    return handle


def _wrap_stream(
    behavior: Callable[..., AsyncIterator[Any]], method: str, streaming_requests: bool
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in responses_of(behavior(_prepare(request, streaming_requests), context)):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - this is the one place errors are mapped
            await _abort(context, error, method)

    return handle
