"""The admin API (meshserve.identity.v1): keys and the audit log, over the edge, for the admin scope.

Thin: proto to domain, services.identity.key_admin or the store, domain to proto. The edge has already
checked the credential; the identity it established is checked again here, and every call is audited.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from meshserve.identity.v1 import identity_pb2 as pb
from meshserve.identity.v1 import identity_pb2_grpc

from gateway.audit import RequestAudit
from gateway.identity import identity_of
from gateway.public_api import IDENTITY_SERVICE_NAME
from services.identity.key_admin import KeyTerms, issue_key, revoke_key, rotate_key
from services.shared.domain import Priority
from services.shared.errors import invalid_argument, not_found, unavailable
from services.shared.identity import Scope
from services.store.database import Database
from services.store.errors import StoreUnavailable
from services.store.records import AuditRecord, KeyRecord

_MAX_AUDIT_RECORDS = 10_000
Reply = TypeVar("Reply")


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, database: Database, audit: RequestAudit) -> None:
        self._database = database
        self._audit = audit

    async def ListKeys(self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext) -> pb.ListKeysResponse:
        async def answer() -> pb.ListKeysResponse:
            keys = await self._database.keys.list(include_revoked=request.include_revoked)
            return pb.ListKeysResponse(keys=[to_api_key(record) for record in keys])

        return await self._served(context, "ListKeys", answer)

    async def CreateKey(self, request: pb.CreateKeyRequest, context: grpc.aio.ServicerContext) -> pb.CreateKeyResponse:
        async def answer() -> pb.CreateKeyResponse:
            issued = await issue_key(self._database.keys, to_terms(request))
            return pb.CreateKeyResponse(api_key=to_api_key(issued.record), secret=issued.key)

        return await self._served(context, "CreateKey", answer)

    async def RevokeKey(self, request: pb.RevokeKeyRequest, context: grpc.aio.ServicerContext) -> pb.RevokeKeyResponse:
        async def answer() -> pb.RevokeKeyResponse:
            await _found(revoke_key(self._database.keys, request.key_id))
            record = await self._database.keys.get(request.key_id)
            assert record is not None
            return pb.RevokeKeyResponse(api_key=to_api_key(record))

        return await self._served(context, "RevokeKey", answer)

    async def RotateKey(self, request: pb.RotateKeyRequest, context: grpc.aio.ServicerContext) -> pb.RotateKeyResponse:
        async def answer() -> pb.RotateKeyResponse:
            if request.grace_seconds < 0:
                raise invalid_argument("INVALID_GRACE", "grace_seconds is 0 or more", field="grace_seconds")
            issued = await _found(rotate_key(self._database.keys, request.key_id, float(request.grace_seconds)))
            return pb.RotateKeyResponse(api_key=to_api_key(issued.record), secret=issued.key)

        return await self._served(context, "RotateKey", answer)

    async def ListAuditRecords(
        self, request: pb.ListAuditRecordsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditRecordsResponse:
        async def answer() -> pb.ListAuditRecordsResponse:
            since = time.time() - (request.since_seconds or 3600)
            limit = min(request.limit or 1000, _MAX_AUDIT_RECORDS)
            subject = request.subject if not request.subject or ":" in request.subject else f"key:{request.subject}"
            records = await self._database.audit.query(since, subject or None, limit)
            return pb.ListAuditRecordsResponse(records=[to_audit_record(record) for record in records])

        return await self._served(context, "ListAuditRecords", answer)

    async def _served(
        self, context: grpc.aio.ServicerContext, method: str, answer: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        with self._audit.call(identity_of(context, f"/{IDENTITY_SERVICE_NAME}/{method}")):
            try:
                return await answer()
            except StoreUnavailable as error:
                raise unavailable("STORE_UNAVAILABLE", str(error), 1.0) from None


async def _found(operation: Awaitable[Reply]) -> Reply:
    try:
        return await operation
    except LookupError as error:
        raise not_found("UNKNOWN_KEY", str(error)) from None


def to_terms(request: pb.CreateKeyRequest) -> KeyTerms:
    try:
        scopes = tuple(Scope(name) for name in request.scopes)
        priority = Priority.NORMAL
        if request.max_priority:
            priority = Priority[pb.Priority.Name(request.max_priority).removeprefix("PRIORITY_")]
        return KeyTerms(
            request.name,
            scopes,
            priority,
            request.requests_per_minute or None,
            request.tokens_per_minute or None,
            request.max_concurrent or None,
            float(request.expires_in_seconds) or None,
        )
    except (KeyError, ValueError) as error:
        raise invalid_argument("INVALID_KEY_TERMS", f"the key's terms are not valid: {error}") from None


def _timestamp(at: float | None) -> Timestamp | None:
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp


def to_api_key(record: KeyRecord) -> pb.ApiKey:
    return pb.ApiKey(
        key_id=record.key_id,
        name=record.name,
        scopes=list(record.scopes),
        max_priority=pb.Priority.Value(f"PRIORITY_{record.max_priority}"),
        requests_per_minute=record.requests_per_minute or 0,
        tokens_per_minute=record.tokens_per_minute or 0,
        max_concurrent=record.max_concurrent or 0,
        create_time=_timestamp(record.created_at),
        expire_time=_timestamp(record.expires_at),
        revoke_time=_timestamp(record.revoked_at),
    )


def to_audit_record(record: AuditRecord) -> pb.AuditRecord:
    return pb.AuditRecord(
        time=_timestamp(record.at),
        subject=record.subject,
        surface=record.surface,
        route=record.route,
        model=record.model,
        priority=record.priority,
        outcome=record.outcome,
        status=record.status,
        reason=record.reason,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        latency_ms=record.latency_ms,
        trace_id=record.trace_id,
    )
