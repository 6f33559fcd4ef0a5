"""The Envoy edge of meshserve: its bootstrap, built with the typed envoy-data-plane messages.

The edge terminates client TLS (plain HTTP on loopback only), answers /healthz, rate-limits,
transcodes REST to gRPC (streams as server-sent events), routes gRPC to the gateway replicas over mTLS
HTTP/2 and the OpenAI API to the OpenAI front over mTLS HTTP/1.1, both with health checks and outlier
detection, and answers unknown paths and wrong methods itself.
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
