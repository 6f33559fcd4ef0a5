"""The Envoy edge of meshserve: its bootstrap, built with the typed envoy-data-plane messages.

The edge terminates client TLS (plain HTTP on loopback only), answers /healthz, rate-limits,
transcodes REST to gRPC (streams as server-sent events), and routes to the gateway replicas over
mTLS HTTP/2 with health checks and outlier detection.
"""

import warnings

# envoy-data-plane 2.2.0 defines its validators in a way pydantic 2.12+ deprecates, which warns once
# per message module on import (over a hundred warnings). Every envoy_data_plane import of this
# package happens below, so the filter covers them all and nothing else.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Using `@model_validator` with mode='after' on a classmethod")
    from gateway.edge.bootstrap import build_bootstrap, write_bootstrap
    from gateway.edge.config import EdgeConfig, HostPort
    from gateway.edge.descriptors import build_descriptor_set

__all__ = ["EdgeConfig", "HostPort", "build_bootstrap", "build_descriptor_set", "write_bootstrap"]
