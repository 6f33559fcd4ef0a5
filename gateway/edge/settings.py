"""The edge writer's settings: command-line flags of `python -m gateway.edge`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.edge.auth import TrustedIssuer
from gateway.edge.config import HostPort


def _issuer(fields: dict[str, Any]) -> TrustedIssuer:
    try:
        jwks_file = fields.get("jwks_file")
        return TrustedIssuer(
            name=str(fields["name"]),
            issuer=str(fields["issuer"]),
            audiences=tuple(str(audience) for audience in fields["audiences"]),
            jwks_file=Path(jwks_file) if jwks_file else None,
            jwks_url=str(fields.get("jwks_url", "")),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"an issuer is JSON: name, issuer, audiences, and jwks_file or jwks_url: {error}") from error


def _host_port(value: str) -> HostPort:
    host, separator, port = value.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


class EdgeWriterSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MESHSERVE_EDGE_", cli_prog_name="python -m gateway.edge", cli_kebab_case=True
    )

    # Where the descriptor set, the bootstrap and the SDS secrets go.
    out_dir: Path
    gateway: list[str]
    # HOST:PORT of each OpenAI front replica; none leaves the OpenAI API out of the edge.
    openai: list[str] = []
    # HOST:PORT of each authorization service replica (gateway/auth), which every request but /healthz
    # passes through.
    auth: list[str]
    # JWT issuers the edge trusts, each as JSON: {"name", "issuer", "audiences", "jwks_file" | "jwks_url"}.
    issuer: list[dict[str, Any]] = []
    http: str = "127.0.0.1:8080"
    https: str = "0.0.0.0:8443"
    admin: str = "127.0.0.1:9901"
    # The edge's mesh identity, which is also the certificate TLS clients see.
    tls_cert: Path
    tls_key: Path
    tls_ca: Path
    # HOST:PORT of the OTLP/gRPC collector; empty leaves tracing out of the bootstrap.
    otlp: str = ""

    @field_validator("http", "https", "admin")
    @classmethod
    def _check_address(cls, value: str) -> str:
        _host_port(value)
        return value

    @field_validator("otlp")
    @classmethod
    def _check_collector(cls, value: str) -> str:
        if value:
            _host_port(value)
        return value

    @field_validator("gateway", "auth")
    @classmethod
    def _check_required_replicas(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("name at least one replica")
        return cls._check_replicas(values)

    @field_validator("issuer")
    @classmethod
    def _check_issuers(cls, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for value in values:
            _issuer(value)
        return values

    @field_validator("openai")
    @classmethod
    def _check_replicas(cls, values: list[str]) -> list[str]:
        for value in values:
            _host_port(value)
        return values

    def listener(self, name: str) -> HostPort:
        """The address of the http, https or admin listener."""
        return _host_port(getattr(self, name))

    def collector(self) -> HostPort | None:
        return _host_port(self.otlp) if self.otlp else None

    def gateway_endpoints(self) -> list[HostPort]:
        return [_host_port(value) for value in self.gateway]

    def openai_endpoints(self) -> list[HostPort]:
        return [_host_port(value) for value in self.openai]

    def auth_endpoints(self) -> list[HostPort]:
        return [_host_port(value) for value in self.auth]

    def trusted_issuers(self) -> tuple[TrustedIssuer, ...]:
        return tuple(_issuer(value) for value in self.issuer)
