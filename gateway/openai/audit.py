"""The OpenAI front's share of the audit log: the requests it refuses itself (a body that does not parse, a
bad header), which never reach the gateway that audits the rest."""

from __future__ import annotations

from fastapi import Request

from gateway.audit import RequestAudit
from gateway.openai.errors import OpenAIError
from services.shared.identity import IDENTITY_HEADER, decode_identity


class FrontAudit:
    def __init__(self, audit: RequestAudit) -> None:
        self._audit = audit

    def refused(self, request: Request, error: OpenAIError) -> None:
        try:
            identity = decode_identity(request.headers.get(IDENTITY_HEADER, ""))
        except ValueError:
            # The edge names every request it lets in; one without a name was not let in by it.
            return
        self._audit.refused(identity, error.status, (error.code or error.type).upper())
