"""The protobuf descriptor set that Envoy's gRPC-JSON transcoder reads.

The transcoder learns the REST bindings (google.api.http) and the message shapes from this file.
It also needs google.rpc.Status and the error detail messages in the set: with convert_grpc_status it
renders the grpc-status-details-bin trailer as JSON, and it can only print an Any whose type it knows.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOS_ROOT = _REPO_ROOT / "protos"
GOOGLEAPIS_ROOT = _REPO_ROOT / "third_party" / "googleapis"

GATEWAY_PROTO = "meshserve/gateway/v1/gateway.proto"
GATEWAY_SERVICE = "meshserve.gateway.v1.GatewayService"
# The admin API, which the authorization service serves.
IDENTITY_PROTO = "meshserve/identity/v1/identity.proto"
IDENTITY_SERVICE = "meshserve.identity.v1.IdentityService"
JOBS_PROTO = "meshserve/jobs/v1/jobs.proto"
JOBS_SERVICE = "meshserve.jobs.v1.JobsService"
# Not imported by gateway.proto, so named explicitly: the types of error details in a google.rpc.Status.
_ERROR_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")


def build_descriptor_set(out_path: Path) -> Path:
    """Writes a self-contained FileDescriptorSet for the public APIs to out_path and returns it."""
    # grpc_tools is imported here so that building the rest of the bootstrap does not need it.
    from grpc_tools import protoc

    out_path.parent.mkdir(parents=True, exist_ok=True)
    well_known_types = str(files("grpc_tools").joinpath("_proto"))
    args = [
        "protoc",
        f"--proto_path={PROTOS_ROOT}",
        f"--proto_path={GOOGLEAPIS_ROOT}",
        f"--proto_path={well_known_types}",
        "--include_imports",
        # Source info keeps the comments, which Envoy ignores but tools reading the set may show.
        "--include_source_info",
        f"--descriptor_set_out={out_path}",
        GATEWAY_PROTO,
        IDENTITY_PROTO,
        JOBS_PROTO,
        *_ERROR_PROTOS,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc could not build the descriptor set for {GATEWAY_PROTO}")
    return out_path
