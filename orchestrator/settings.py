"""The launcher's settings: environment (MESHSERVE_*). Every port can be moved, so meshes can run side by side."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LauncherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSERVE_")

    config: Path = Path("deploy/meshserve.toml")
    # Certificates, the Envoy bootstrap, and the logs of a local run.
    state_dir: Path = Path(".meshserve")
    host: str = "127.0.0.1"
    edge_http_port: int = 8080
    edge_https_port: int = 8443
    edge_admin_port: int = 9901
    gateway_port: int = 50041
    # Gateway replicas: the n-th listens on gateway_port plus n, its metrics on gateway_metrics_port plus n.
    # The edge, the OpenAI front and the job runner spread their calls over all of them.
    gateway_replicas: int = Field(default=1, ge=1, le=8)
    scheduler_port: int = 50051
    gpu_monitor_port: int = 50071
    # The OpenAI front (gateway/openai), which the edge's OpenAI routes lead to.
    openai_port: int = 50031
    # The authorization service (gateway/auth), which Envoy asks about every request.
    auth_port: int = 50045
    # The inference service of the n-th configured model listens on this port plus n.
    inference_base_port: int = 50061
    # Whether this machine is a node of its own mesh: runs its GPU monitor and an inference service per model.
    # False runs only the control plane (edge, gateways, scheduler, auth, OpenAI front, jobs) for nodes
    # elsewhere, whose endpoints register with the scheduler and whose monitors are named in `monitors`.
    local_node: bool = True
    # Other nodes' GPU monitors the scheduler follows, as HOST:PORT or dns:NAME:PORT, as a JSON list.
    monitors: list[str] = []
    # Where the scheduler listens; other nodes' endpoints register there, so "0.0.0.0" when there are any.
    scheduler_host: str = ""
    startup_timeout_seconds: float = 300.0
    # Requests that may wait in the scheduler's queue; past it they are refused with 429.
    max_queue: int = 64
    # Prometheus /metrics of each service; the inference service of the n-th model gets the base plus n.
    gateway_metrics_port: int = 9464
    scheduler_metrics_port: int = 9465
    gpu_monitor_metrics_port: int = 9466
    openai_metrics_port: int = 9463
    auth_metrics_port: int = 9462
    jobs_metrics_port: int = 9461
    inference_metrics_base_port: int = 9467
    # The store of keys and audit records: PostgreSQL when this names one, else SQLite in the state directory.
    database_url: str = ""
    # JWT issuers the edge trusts besides the development one, as a JSON list of
    # {"name", "issuer", "audiences", "jwks_file" | "jwks_url"}.
    jwt_issuers: list[dict[str, object]] = []
    # The credential `meshserve generate` and `status` send; empty sends the development key in the state dir.
    api_key: str = ""
    # Whether the edge trusts the development issuer that `meshserve token` mints with.
    trust_dev_issuer: bool = True
    # Where operators read traces; `meshserve generate --show-trace` links to it.
    jaeger_ui: str = "http://localhost:16686"
    # Where traces go (OTLP/gRPC). The services read the standard variables themselves; Envoy is told here.
    otel_exporter_otlp_endpoint: str = Field(
        default="", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def edge_dir(self) -> Path:
        return self.state_dir / "edge"

    @property
    def api_key_file(self) -> Path:
        """The development admin key `meshserve up` issues, and what the CLI sends by default."""
        return self.state_dir / "api-key"

    @property
    def dev_issuer_dir(self) -> Path:
        return self.state_dir / "jwt"

    def store_url(self) -> str:
        # Imported here: the CLI's generate command never loads SQLAlchemy.
        from services.store.urls import store_url

        return store_url(self.database_url, self.state_dir)

    def address(self, port: int) -> str:
        return f"{self.host}:{port}"

    def otlp_collector(self) -> tuple[str, int] | None:
        """The collector as host and port, for Envoy; None when traces are off."""
        if not self.otel_exporter_otlp_endpoint:
            return None
        endpoint = urlsplit(self.otel_exporter_otlp_endpoint)
        if not endpoint.hostname:
            endpoint = urlsplit(f"//{self.otel_exporter_otlp_endpoint}")
        return endpoint.hostname or "localhost", endpoint.port or 4317
