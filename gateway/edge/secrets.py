"""File-based SDS: the edge's certificates and the mesh CA, as secret files that Envoy watches.

Envoy loads each secret from its own file (file-based SDS takes exactly one resource per file), and
reloads it when the file is replaced, or when the certificate or key files it names are replaced,
so rotated certificates take effect without a restart. Both writers (write_bootstrap here and
services.shared.certs) replace files by an atomic rename, which is the event Envoy's watches see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any as JsonValue

import betterproto2
from envoy_data_plane.envoy.config.core.v3 import (
    ApiVersion,
    ConfigSource,
    DataSource,
    PathConfigSource,
    WatchedDirectory,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    SdsSecretConfig,
    Secret,
    TlsCertificate,
)
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse

from gateway.edge.config import EdgeConfig
from gateway.edge.typed import pack, to_json_dict
from services.shared.tls import TlsFiles

# The certificate clients see on the TLS listener.
EDGE_SERVER_SECRET = "edge_server_certificate"
# The edge's mesh identity, presented to the gateway.
EDGE_CLIENT_SECRET = "edge_client_certificate"
# The CA the gateway's certificate must chain to.
MESH_CA_SECRET = "mesh_ca"


def secret_path(config: EdgeConfig, name: str) -> Path:
    return config.sds_dir.resolve() / f"{name}.json"


def sds_secret_config(config: EdgeConfig, name: str) -> SdsSecretConfig:
    """A reference to one secret file, reloaded whenever a file is moved into sds_dir."""
    source = PathConfigSource(
        path=str(secret_path(config, name)),
        watched_directory=WatchedDirectory(path=str(config.sds_dir.resolve())),
    )
    return SdsSecretConfig(
        name=name, sds_config=ConfigSource(path_config_source=source, resource_api_version=ApiVersion.V3)
    )


def secret_documents(config: EdgeConfig) -> dict[Path, dict[str, JsonValue]]:
    """Each secret file's path and its content: a DiscoveryResponse holding one Secret."""
    secrets = [
        _certificate_secret(EDGE_SERVER_SECRET, config.server_tls),
        _certificate_secret(EDGE_CLIENT_SECRET, config.upstream_tls),
        _ca_secret(MESH_CA_SECRET, config.upstream_tls.ca),
    ]
    return {secret_path(config, secret.name): _discovery_response(secret) for secret in secrets}


def _certificate_secret(name: str, tls: TlsFiles) -> Secret:
    cert, key = tls.cert.resolve(), tls.key.resolve()
    certificate = TlsCertificate(
        certificate_chain=DataSource(filename=str(cert)),
        private_key=DataSource(filename=str(key)),
        # The pair is re-read together when either file is replaced in this directory.
        watched_directory=WatchedDirectory(path=str(cert.parent)),
    )
    return Secret(name=name, tls_certificate=certificate)


def _ca_secret(name: str, ca: Path) -> Secret:
    ca = ca.resolve()
    context = CertificateValidationContext(
        trusted_ca=DataSource(filename=str(ca)), watched_directory=WatchedDirectory(path=str(ca.parent))
    )
    return Secret(name=name, validation_context=context)


def _discovery_response(secret: betterproto2.Message) -> dict[str, JsonValue]:
    return to_json_dict(DiscoveryResponse(resources=[pack(secret)]))
