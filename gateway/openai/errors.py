"""Every failure of the OpenAI surface as OpenAI's error envelope, with the HTTP status OpenAI clients expect.

Mapped once, here: the mesh's typed errors (MeshError, as the gateway reports them), the request bodies
pydantic refuses, and the few refusals the front makes itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from services.shared.errors import RATE_LIMIT_HEADER_PREFIX, ErrorKind, MeshError, http_status_of

# ErrorKind -> OpenAI error type; the HTTP status is the mesh's own (http_status_of).
_TYPE_OF_KIND = {
    ErrorKind.INVALID_ARGUMENT: "invalid_request_error",
    ErrorKind.FAILED_PRECONDITION: "invalid_request_error",
    ErrorKind.UNAUTHENTICATED: "authentication_error",
    ErrorKind.PERMISSION_DENIED: "permission_error",
    ErrorKind.NOT_FOUND: "invalid_request_error",
    ErrorKind.ALREADY_EXISTS: "invalid_request_error",
    ErrorKind.RESOURCE_EXHAUSTED: "rate_limit_error",
    ErrorKind.UNAVAILABLE: "service_unavailable_error",
    ErrorKind.DEADLINE_EXCEEDED: "timeout_error",
}
# A status more precise than its kind's names its own type: headers too large are a bad request, not a rate limit.
_TYPE_OF_STATUS = {413: "invalid_request_error", 431: "invalid_request_error"}
# Reasons whose parameter the error's metadata does not name.
_PARAM_OF_REASON = {
    "UNKNOWN_MODEL": "model",
    "EMPTY_PROMPT": "messages",
    "PROMPT_TOO_LONG": "messages",
    "INVALID_CHAT_ROLE": "messages",
    "INVALID_CONVERSATION": "messages",
    "CHAT_NOT_SUPPORTED": "messages",
    "INVALID_PRIORITY": "x-meshserve-priority",
}
# OpenAI's own codes, where it has one for the same failure.
_CODE_OF_REASON = {"UNKNOWN_MODEL": "model_not_found"}


@dataclass(eq=False)
class OpenAIError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after_seconds: float | None = None
    # The x-ratelimit-* headers of a credential's limit.
    rate_limits: dict[str, str] | None = None
    # Whether the gateway refused it (and so audited it), rather than the front itself.
    from_gateway: bool = False

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        headers = dict(self.rate_limits or {})
        if self.retry_after_seconds is not None:
            # Retry-After takes whole seconds; rounding down would invite a retry that is refused again.
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after_seconds)))
        return headers


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def from_mesh_error(error: MeshError, param_aliases: dict[str, str] | None = None) -> OpenAIError:
    """The envelope of a typed mesh error; `param_aliases` renames the mesh's field to the one the client sent."""
    status = http_status_of(error)
    kind = _TYPE_OF_STATUS.get(status) or _TYPE_OF_KIND.get(error.kind, "server_error")
    param = error.metadata.get("field") or _PARAM_OF_REASON.get(error.reason)
    if param is not None and param_aliases:
        param = param_aliases.get(param, param)
    code = openai_code(error.reason)
    limits = {key: value for key, value in error.metadata.items() if key.startswith(RATE_LIMIT_HEADER_PREFIX)}
    return OpenAIError(status, error.message, kind, param, code, error.retry_after_seconds, limits or None, True)


def openai_code(reason: str) -> str:
    """The `code` of OpenAI's envelope for a mesh reason: OpenAI's own where it has one."""
    return _CODE_OF_REASON.get(reason, reason.lower())


def from_validation_errors(errors: list[dict[str, Any]]) -> OpenAIError:
    """pydantic's refusal of a body: the first problem, naming the parameter by its path in the body."""
    if not errors:
        return bad_request("the request body is not valid")
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {first.get('msg', '')}", code="invalid_json")
    if not location:
        return bad_request(f"the request body must be a JSON object: {first.get('msg', '')}")
    param = _dotted(location)
    return bad_request(f"{param}: {first.get('msg', 'is not valid')}", param=param, code="invalid_value")


# pydantic names the member of a union it tried ("str", "list[TextPart]") in the location; not a parameter.
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _dotted(location: list[str]) -> str:
    # messages.0.content -> messages[0].content, as OpenAI names nested parameters.
    parts: list[str] = []
    for part in location:
        if not (part.isdigit() or part.isidentifier()) or part.lower() in _TYPE_NAMES:
            break
        if part.isdigit() and parts:
            parts[-1] += f"[{part}]"
        else:
            parts.append(part)
    return ".".join(parts)
