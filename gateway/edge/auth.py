"""Identity at the edge: Envoy's jwt_authn checks tokens, then ext_authz asks the mesh's authorization service
(gateway/auth) about every request but /healthz.

jwt_authn verifies a token's signature (RS256 or ES256, against each issuer's JWKS), issuer, audience and
times, and writes the verified claims, or why it could not verify them, to the request's metadata. It lets
every request on (allow_missing_or_failed), so that one service decides: the authorization service reads
that metadata, looks API keys up in the store, checks the route's scope, and answers with the caller's
identity or a refusal in the shape of the surface. Every refusal, whichever kind of credential, is then
audited in one place.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from envoy_data_plane.envoy.config.core.v3 import (
    ApiVersion,
    DataSource,
    GrpcService,
    GrpcServiceEnvoyGrpc,
    HttpUri,
)
from envoy_data_plane.envoy.config.route.v3 import RouteMatch
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import ExtAuthz
from envoy_data_plane.envoy.extensions.filters.http.jwt_authn.v3 import (
    JwksAsyncFetch,
    JwtAuthentication,
    JwtHeader,
    JwtProvider,
    JwtRequirement,
    JwtRequirementOrList,
    RemoteJwks,
    RequirementRule,
)
from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
from envoy_data_plane.google.protobuf import Empty

from gateway.auth.core.tokens import JWT_FAILURE_KEY, JWT_FILTER, JWT_PAYLOAD_KEY

AUTH_CLUSTER = "auth"


@dataclass(frozen=True)
class TrustedIssuer:
    """A JWT issuer the edge trusts: its JWKS from a file (watched by nobody: reloaded on restart) or a URL."""

    name: str
    issuer: str
    audiences: tuple[str, ...]
    jwks_file: Path | None = None
    jwks_url: str = ""
    # Tokens that live longer than this are refused, whatever their exp says.
    max_lifetime: datetime.timedelta = datetime.timedelta(hours=24)
    clock_skew_seconds: int = 30

    def __post_init__(self) -> None:
        if (self.jwks_file is None) == (not self.jwks_url):
            raise ValueError(f"issuer {self.name}: give its JWKS as a file or a URL, exactly one")
        if self.jwks_url and urlsplit(self.jwks_url).scheme not in ("http", "https"):
            raise ValueError(f"issuer {self.name}: the JWKS URL must be http(s), not {self.jwks_url!r}")
        if not self.audiences:
            raise ValueError(f"issuer {self.name}: name at least one audience")

    @property
    def jwks_cluster(self) -> str:
        return f"jwks_{self.name}"


@dataclass(frozen=True)
class EdgeAuth:
    issuers: tuple[TrustedIssuer, ...] = field(default_factory=tuple)
    # A check that takes longer fails, and the request is answered 503.
    check_timeout: datetime.timedelta = datetime.timedelta(seconds=2)


def jwt_authentication(auth: EdgeAuth) -> JwtAuthentication:
    providers = {issuer.name: _provider(issuer) for issuer in auth.issuers}
    any_issuer = [JwtRequirement(provider_name=name) for name in providers]
    requirement = JwtRequirement(
        requires_any=JwtRequirementOrList(requirements=[*any_issuer, JwtRequirement(allow_missing_or_failed=Empty())])
    )
    return JwtAuthentication(
        providers=providers, rules=[RequirementRule(match=RouteMatch(prefix="/"), requires=requirement)]
    )


def _provider(issuer: TrustedIssuer) -> JwtProvider:
    provider = JwtProvider(
        issuer=issuer.issuer,
        audiences=list(issuer.audiences),
        require_expiration=True,
        max_lifetime=issuer.max_lifetime,
        clock_skew_seconds=issuer.clock_skew_seconds,
        from_headers=[JwtHeader(name="authorization", value_prefix="Bearer ")],
        # Kept for ext_authz, which sees a bearer credential either way; it removes it before the router.
        forward=True,
        payload_in_metadata=JWT_PAYLOAD_KEY,
        failed_status_in_metadata=JWT_FAILURE_KEY,
    )
    if issuer.jwks_file is not None:
        provider.local_jwks = DataSource(filename=str(issuer.jwks_file.resolve()))
    else:
        provider.remote_jwks = RemoteJwks(
            http_uri=HttpUri(uri=issuer.jwks_url, cluster=issuer.jwks_cluster, timeout=datetime.timedelta(seconds=5)),
            cache_duration=datetime.timedelta(minutes=10),
            # Fetched at start and refreshed in the background, so no request waits for it.
            async_fetch=JwksAsyncFetch(fast_listener=True),
        )
    return provider


def ext_authz(auth: EdgeAuth) -> ExtAuthz:
    return ExtAuthz(
        grpc_service=GrpcService(
            envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=AUTH_CLUSTER), timeout=auth.check_timeout
        ),
        transport_api_version=ApiVersion.V3,
        # Closed: when the authorization service cannot answer, nothing is let in.
        failure_mode_allow=False,
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        metadata_context_namespaces=[JWT_FILTER],
    )
