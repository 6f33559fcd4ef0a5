"""Which scope each route needs, on every surface: gRPC methods, their REST bindings and the OpenAI API.

A REST path needs what the gRPC method it is transcoded to needs, so each method's scope is written once.
A path this table does not know still needs a valid credential (Envoy then answers it 404 or 405): no
route but health is anonymous.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.public_api import GATEWAY_SERVICE_NAME, IDENTITY_SERVICE_NAME, JOBS_SERVICE_NAME, grpc_paths, rest_bindings
from services.shared.identity import Scope, Surface

_GATEWAY = f"/{GATEWAY_SERVICE_NAME}/"
_IDENTITY = f"/{IDENTITY_SERVICE_NAME}/"
_JOBS = f"/{JOBS_SERVICE_NAME}/"
METHOD_SCOPES = {
    f"{_GATEWAY}Generate": Scope.INFERENCE,
    f"{_GATEWAY}ListModels": Scope.INFERENCE,
    f"{_GATEWAY}GetGpuStatus": Scope.ADMIN,
    f"{_GATEWAY}GetSchedulerState": Scope.ADMIN,
    **{f"{_JOBS}{name}": Scope.JOBS
       for name in ("SubmitJob", "GetJob", "GetJobResult", "CancelJob", "SubmitBatch", "GetBatch", "CancelBatch",
                    "ListJobs")},
    **{f"{_IDENTITY}{name}": Scope.ADMIN
       for name in ("ListKeys", "CreateKey", "RevokeKey", "RotateKey", "ListAuditRecords")},
}  # fmt: skip
ANONYMOUS_GRPC_PREFIXES = ("/grpc.health.v1.Health/",)
# Reflection tells a client the API's shape, which is what an inference caller needs to call it.
_REFLECTION_PREFIX = "/grpc.reflection."
_OPENAI_SCOPES = (("/v1/chat/completions", Scope.INFERENCE), ("/v1/completions", Scope.INFERENCE),
                  ("/v1/models", Scope.INFERENCE), ("/v1/files", Scope.JOBS), ("/v1/batches", Scope.JOBS))  # fmt: skip


@dataclass(frozen=True)
class RouteRule:
    surface: Surface
    # None: any valid credential will do.
    scope: Scope | None
    # How the audit log names the route.
    route: str


def _rest_scopes() -> tuple[dict[str, Scope], list[tuple[str, Scope]]]:
    """Literal paths, and templated ones by what comes before their first variable."""
    literal = {b.path: METHOD_SCOPES[b.grpc_path] for b in rest_bindings() if not b.is_template}
    templated = [(b.path.split("{")[0], METHOD_SCOPES[b.grpc_path]) for b in rest_bindings() if b.is_template]
    return literal, templated


_REST_SCOPES, _TEMPLATED_REST_SCOPES = _rest_scopes()


def _rest_scope(path: str) -> Scope | None:
    if path in _REST_SCOPES:
        return _REST_SCOPES[path]
    return next((scope for prefix, scope in _TEMPLATED_REST_SCOPES if path.startswith(prefix)), None)


def is_grpc(content_type: str) -> bool:
    return content_type.startswith("application/grpc")


def rule_for(method: str, path: str, content_type: str) -> RouteRule | None:
    """The rule for a request, or None for the anonymous health routes."""
    path = path.partition("?")[0]
    if is_grpc(content_type):
        if path.startswith(ANONYMOUS_GRPC_PREFIXES):
            return None
        scope = METHOD_SCOPES.get(path, Scope.INFERENCE if path.startswith(_REFLECTION_PREFIX) else None)
        return RouteRule(Surface.GRPC, scope, path)
    route = f"{method} {path}"
    for prefix, scope in _OPENAI_SCOPES:
        if path == prefix or path.startswith(f"{prefix}/"):
            return RouteRule(Surface.OPENAI, scope, route)
    return RouteRule(Surface.REST, _rest_scope(path), route)


def unprotected_methods() -> list[str]:
    """Public gRPC methods with no scope in the table: a method added without one shows up here."""
    return [path for path in grpc_paths() if path not in METHOD_SCOPES]
