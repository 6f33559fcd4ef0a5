"""A gRPC health probe over mTLS, for Kubernetes: `python -m services.shared.probe ADDRESS ROLE [--ready]`.

The kubelet's own gRPC probe speaks plaintext only, and every meshserve service serves mTLS alone, so
pods probe themselves with this, under their own certificate (health is open to every mesh identity).
It exits 0 when the service answers (liveness) or, with --ready, answers SERVING (readiness); else 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.shared.certs import role_name
from services.shared.tls import TlsFiles, channel_credentials

# Where the manifests in deploy/k8s mount each pod's certificate (a cert-manager Secret's layout).
DEFAULT_TLS_DIR = Path("/etc/meshserve/tls")


def probe(address: str, role: str, tls: TlsFiles, ready: bool, timeout: float) -> bool:
    options = (("grpc.ssl_target_name_override", role_name(role)),)
    with grpc.secure_channel(address, channel_credentials(tls), options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as error:
            print(f"{address}: {error.code().name}", file=sys.stderr)
            return False
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    if ready and not serving:
        print(f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}", file=sys.stderr)
    return serving or not ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.shared.probe", description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT of the service")
    parser.add_argument("role", help="the service's role, whose name its certificate carries (gateway, inference...)")
    parser.add_argument("--ready", action="store_true", help="succeed only when the service is SERVING")
    parser.add_argument("--tls-dir", type=Path, default=DEFAULT_TLS_DIR, help="holds tls.crt, tls.key and ca.crt")
    parser.add_argument("--timeout", type=float, default=3.0)
    options = parser.parse_args(argv)
    tls = TlsFiles(options.tls_dir / "tls.crt", options.tls_dir / "tls.key", options.tls_dir / "ca.crt")
    return 0 if probe(options.address, options.role, tls, options.ready, options.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
