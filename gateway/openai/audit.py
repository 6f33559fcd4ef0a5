"""The OpenAI front's share of the audit log: the requests it refuses itself (a body that does not parse, a
bad header), which never reach the gateway that audits the rest, and the Batch API's, which it serves itself."""

from __future__ import annotations

from fastapi import Request

from gateway.audit import RequestAudit
from gateway.openai.errors import OpenAIError
from services.shared.identity import IDENTITY_HEADER, Identity, decode_identity


class FrontAudit:
    def __init__(self, audit: RequestAudit) -> None:
        self._audit = audit

    def refused(self, request: Request, error: OpenAIError) -> None:
        if (identity := _identity_of(request)) is not None:
            self._audit.refused(identity, error.status, (error.code or error.type).upper())

    def served(self, request: Request) -> None:
        if (identity := _identity_of(request)) is not None:
            self._audit.served(identity)


def _identity_of(request: Request) -> Identity | None:
    try:
        return decode_identity(request.headers.get(IDENTITY_HEADER, ""))
    except ValueError:
        # The edge names every request it lets in; one without a name was not let in by it.
        return None
