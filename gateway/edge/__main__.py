"""`python -m gateway.edge`: writes the Envoy edge's bootstrap, secrets and descriptor set; prints the bootstrap path.

A program of its own, so that the launcher (or a deployment's init step) gets Envoy's configuration
without importing the gateway.
"""

from __future__ import annotations

from pathlib import Path

from gateway.edge.auth import EdgeAuth
from gateway.edge.bootstrap import write_bootstrap
from gateway.edge.config import EdgeConfig
from gateway.edge.descriptors import build_descriptor_set
from gateway.edge.settings import EdgeWriterSettings
from services.shared.tls import TlsFiles


def write_edge(settings: EdgeWriterSettings) -> Path:
    identity = TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_ca)
    edge = EdgeConfig(
        gateway_endpoints=settings.gateway_endpoints(),
        openai_endpoints=settings.openai_endpoints(),
        auth_endpoints=settings.auth_endpoints(),
        auth=EdgeAuth(issuers=settings.trusted_issuers()),
        server_tls=identity,
        upstream_tls=identity,
        descriptor_set=build_descriptor_set(settings.out_dir / "gateway.pb"),
        sds_dir=settings.out_dir / "sds",
        plain_http_address=settings.listener("http"),
        tls_address=settings.listener("https"),
        admin_address=settings.listener("admin"),
        otlp_endpoint=settings.collector(),
    )
    return write_bootstrap(edge, settings.out_dir / "envoy.json")


def main() -> None:
    try:
        print(write_edge(EdgeWriterSettings(_cli_parse_args=True)))
    except ValueError as error:
        # Bad flags (pydantic's ValidationError is a ValueError) or an edge the config refuses.
        raise SystemExit(f"python -m gateway.edge: {error}") from None


if __name__ == "__main__":
    main()
