"""The Envoy edge bootstrap, built from typed envoy-data-plane messages and written as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any as JsonValue

from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.core.v3 import Node

from gateway.edge.clusters import clusters
from gateway.edge.config import EdgeConfig
from gateway.edge.listeners import listeners
from gateway.edge.protection import overload_manager
from gateway.edge.secrets import secret_documents
from gateway.edge.tracing import tracing_runtime
from gateway.edge.typed import socket_address, to_json_dict

NODE_ID = "meshserve-edge"


def build_bootstrap(config: EdgeConfig) -> dict[str, JsonValue]:
    """The bootstrap as a JSON-compatible dict (proto3 JSON with the .proto field names)."""
    bootstrap = Bootstrap(
        node=Node(id=NODE_ID, cluster=NODE_ID),
        static_resources=BootstrapStaticResources(listeners=listeners(config), clusters=clusters(config)),
        # Operators (and the edge's probes) reach the admin interface even when clients fill the connection cap.
        admin=Admin(address=socket_address(config.admin_address), ignore_global_conn_limit=True),
        overload_manager=overload_manager(config.limits),
        # Only the tracer's batching; without tracing, Envoy's defaults for everything.
        layered_runtime=tracing_runtime(config),
    )
    return to_json_dict(bootstrap)


def write_bootstrap(config: EdgeConfig, path: Path) -> Path:
    """Writes the SDS secret files into config.sds_dir, then the bootstrap to path; returns path.

    The secrets come first: Envoy requires every SDS file to exist when it loads the bootstrap.
    """
    config.sds_dir.mkdir(parents=True, exist_ok=True)
    for secret_path, document in secret_documents(config).items():
        _write_json(secret_path, document)
    _write_json(path, build_bootstrap(config))
    return path


def _write_json(path: Path, document: dict[str, JsonValue]) -> None:
    # Replaced by a rename, never rewritten in place: a running Envoy watching the directory reloads
    # on the move and never reads half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(temporary, path)
