"""Authorises callers by the SPIFFE ID in their client certificate.

mTLS already proves a caller holds a certificate from the mesh CA; this says which of those callers may
use a service (only the gateway may call inference, for example). Health and reflection stay open to
any mesh identity, so balancers and operators can probe every service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc

from services.shared.certs import spiffe_id
from services.shared.error_interceptor import PROBE_METHOD_PREFIXES, responses_of
from services.shared.errors import permission_denied


def caller_identity(context: grpc.aio.ServicerContext) -> str | None:
    values = context.auth_context().get("peer_spiffe_id") or []
    return values[0].decode() if values else None


class SpiffeAuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Admits the allowed services to every method, except the methods `reserved` names: only their own
    callers may call those (only inference registers endpoints with the scheduler, and it may do nothing else)."""

    def __init__(self, allowed_services: Iterable[str], reserved: Mapping[str, Iterable[str]] | None = None) -> None:
        self._allowed = frozenset(spiffe_id(service) for service in allowed_services)
        self._reserved = {
            method: frozenset(spiffe_id(service) for service in services)
            for method, services in (reserved or {}).items()
        }

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(PROBE_METHOD_PREFIXES):
            return handler
        allowed = self._reserved.get(method, self._allowed)
        return guard_handler(handler, lambda context: self._check(context, allowed))

    def _check(self, context: grpc.aio.ServicerContext, allowed: frozenset[str]) -> None:
        caller = caller_identity(context)
        if caller not in allowed:
            raise permission_denied(
                "CALLER_NOT_ALLOWED",
                f"{caller or 'a caller without a SPIFFE ID'} may not call this service",
                caller=caller or "",
            )


def guard_handler(handler: grpc.RpcMethodHandler, check: Callable[[grpc.aio.ServicerContext], None]) -> Any:
    """The same handler, with `check(context)` run before its behaviour, whatever its streaming kind."""
    if handler.unary_unary:
        return handler._replace(unary_unary=_guard_unary(handler.unary_unary, check))
    if handler.stream_unary:
        return handler._replace(stream_unary=_guard_unary(handler.stream_unary, check))
    if handler.unary_stream:
        return handler._replace(unary_stream=_guard_stream(handler.unary_stream, check))
    return handler._replace(stream_stream=_guard_stream(handler.stream_stream, check))


def _guard_unary(behavior: Callable[..., Awaitable[Any]], check: Callable[..., None]) -> Callable[..., Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        check(context)
        return await behavior(request, context)

    return guarded


def _guard_stream(
    behavior: Callable[..., AsyncIterator[Any]], check: Callable[..., None]
) -> Callable[..., AsyncIterator[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        check(context)
        async for response in responses_of(behavior(request, context)):
            yield response

    return guarded
