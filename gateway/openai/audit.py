"""The OpenAI front's share of the audit log: the requests it refuses itself (a body that does not parse, a
bad header), which never reach the gateway that audits the rest."""

from __future__ import annotations

import time

from fastapi import Request
from opentelemetry import trace

from gateway.openai.errors import OpenAIError
from services.shared.audit_log import AuditLog
from services.shared.identity import IDENTITY_HEADER, decode_identity
from services.store.records import AuditRecord
from telemetry.spans import trace_id_of


class FrontAudit:
    def __init__(self, log: AuditLog) -> None:
        self._log = log

    def refused(self, request: Request, error: OpenAIError) -> None:
        try:
            identity = decode_identity(request.headers.get(IDENTITY_HEADER, ""))
        except ValueError:
            # The edge names every request it lets in; one without a name was not let in by it.
            return
        self._log.record(
            AuditRecord(
                at=time.time(),
                subject=identity.subject,
                surface=identity.surface.value,
                route=identity.route,
                model="",
                priority="",
                outcome="refused",
                status=error.status,
                reason=(error.code or error.type).upper(),
                input_tokens=0,
                output_tokens=0,
                latency_ms=0.0,
                trace_id=trace_id_of(trace.get_current_span()),
            )
        )
