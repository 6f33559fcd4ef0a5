"""What every service's settings share: where it listens, its credentials, and who may call it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.shared.tls import TlsFiles
from telemetry.tracing import TracingSettings


def _fits_a_device_id(value: str) -> str:
    if not value or "/" in value:
        raise ValueError("node_name must be non-empty and contain no '/', as it is the first part of device ids")
    return value


# A node's name, which begins each of its device ids ("<node>/gpu0"): its GPU monitor and its inference
# services give the same one, so the scheduler puts the endpoints on that node's devices.
NodeName = Annotated[str, AfterValidator(_fits_a_device_id)]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(cli_implicit_flags=True, cli_kebab_case=True)

    listen: str = "127.0.0.1:0"
    # Plaintext is for tests of a single service on loopback; every other use is mTLS.
    plaintext: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # Services whose SPIFFE IDs may call this one; plaintext servers cannot tell callers apart.
    allowed_callers: list[str] = []
    shutdown_grace_seconds: float = 5.0
    log_level: str = "INFO"
    # HOST:PORT for Prometheus /metrics; empty serves none.
    metrics_listen: str = ""
    # The standard OpenTelemetry variables, under their own names.
    otel_exporter_otlp_endpoint: str = Field(
        default="", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    otel_traces_exporter: str = Field(default="otlp", validation_alias="OTEL_TRACES_EXPORTER")

    @model_validator(mode="after")
    def _credentials_or_plaintext(self) -> ServiceSettings:
        if not self.plaintext and None in (self.tls_cert, self.tls_key, self.tls_ca):
            raise ValueError("set tls_cert, tls_key and tls_ca for mTLS, or ask for plaintext explicitly")
        return self

    def tracing(self) -> TracingSettings:
        return TracingSettings(self.otel_exporter_otlp_endpoint, self.otel_sdk_disabled, self.otel_traces_exporter)

    def tls_files(self) -> TlsFiles | None:
        if self.plaintext:
            return None
        assert self.tls_cert and self.tls_key and self.tls_ca
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_ca)


class StoreServiceSettings(ServiceSettings):
    """A service's settings, and where the mesh's durable store is: PostgreSQL when MESHSERVE_DATABASE_URL names
    one, else SQLite in the state directory."""

    database_url: str = Field(default="", validation_alias=AliasChoices("database_url", "MESHSERVE_DATABASE_URL"))
    state_dir: Path = Field(
        default=Path(".meshserve"), validation_alias=AliasChoices("state_dir", "MESHSERVE_STATE_DIR")
    )

    def store_url(self) -> str:
        # Imported here: services without a store never load SQLAlchemy.
        from services.store.urls import store_url

        return store_url(self.database_url, self.state_dir)
