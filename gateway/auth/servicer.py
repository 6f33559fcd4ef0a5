"""Envoy's ext_authz Check: the request's attributes in, the authorizer's decision out, every refusal audited."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry import trace

from gateway.auth.answers import challenge_for, let_in, refuse
from gateway.auth.core.authorizer import AccessRequest, Authorizer
from gateway.auth.core.routes import rule_for
from gateway.auth.core.tokens import JWT_FAILURE_KEY, JWT_FILTER, JWT_PAYLOAD_KEY
from gateway.auth.wire import ext_authz_pb2 as wire
from gateway.auth.wire import ext_authz_pb2_grpc
from services.shared.audit_log import AuditLog
from services.shared.errors import MeshError
from services.shared.identity import Surface
from services.store.records import AuditRecord
from telemetry.spans import trace_id_of


class AuthorizationServicer(ext_authz_pb2_grpc.AuthorizationServicer):
    def __init__(self, authorizer: Authorizer, audit: AuditLog) -> None:
        self._authorizer = authorizer
        self._audit = audit

    async def Check(self, request: wire.CheckRequest, context: grpc.aio.ServicerContext) -> wire.CheckResponse:
        started, arrived = time.monotonic(), time.time()
        access = access_request_of(request)
        try:
            identity = await self._authorizer.check(access)
        except MeshError as error:
            content_type = access.headers.get("content-type", "")
            rule = rule_for(access.method, access.path, content_type)
            surface = rule.surface if rule else Surface.REST
            answer = refuse(error, surface, content_type, challenge_for(error))
            self._audit.record(_refusal_record(access, error, surface, arrived, started, answer))
            return answer
        return let_in(identity, access.headers.keys())


def access_request_of(request: wire.CheckRequest) -> AccessRequest:
    http = request.attributes.request.http
    token = request.attributes.metadata_context.filter_metadata.get(JWT_FILTER)
    claims, failure = None, None
    if token is not None:
        fields: Mapping[str, Any] = json_format.MessageToDict(token)
        claims = fields.get(JWT_PAYLOAD_KEY)
        failure_fields = fields.get(JWT_FAILURE_KEY)
        failure = str(failure_fields.get("message", "")) if isinstance(failure_fields, dict) else None
    path, _, query = http.path.partition("?")
    return AccessRequest(http.method, path, query or http.query, dict(http.headers), claims, failure)


def _refusal_record(
    access: AccessRequest,
    error: MeshError,
    surface: Surface,
    arrived: float,
    started: float,
    answer: wire.CheckResponse,
) -> AuditRecord:
    status = answer.denied_response.status.code
    route = f"{access.method} {access.path}" if surface is not Surface.GRPC else access.path
    return AuditRecord(
        at=arrived,
        subject=error.metadata.get("subject", ""),
        surface=surface.value,
        route=route,
        model="",
        priority="",
        outcome=_outcome_of(status),
        status=status,
        reason=error.reason,
        input_tokens=0,
        output_tokens=0,
        latency_ms=(time.monotonic() - started) * 1000,
        trace_id=trace_id_of(trace.get_current_span()),
    )


def _outcome_of(status: int) -> str:
    if status in (401, 403):
        return "denied"
    # The key store could not be reached; anything else (headers too large) is the request's own fault.
    return "unavailable" if status >= 500 else "refused"
