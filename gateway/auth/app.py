"""The authorization service's composition root: Envoy's ext_authz over mTLS gRPC, keys from the store, and
the admin API (keys, audit) that the edge routes here.

It listens once the store is open (migrated); until then Envoy cannot reach it, and answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time

from meshserve.identity.v1 import identity_pb2_grpc

from gateway.audit import RequestAudit
from gateway.auth.admin import IdentityServicer
from gateway.auth.core.authorizer import Authorizer
from gateway.auth.core.tokens import TokenPolicy
from gateway.auth.key_cache import CachedKeyDirectory
from gateway.auth.servicer import AuthorizationServicer
from gateway.auth.settings import AuthSettings
from gateway.auth.wire import ext_authz_pb2, ext_authz_pb2_grpc
from gateway.public_api import IDENTITY_SERVICE_NAME
from services.shared.audit_log import AuditLog
from services.shared.grpc_server import (
    add_health_and_reflection,
    bind,
    create_service_server,
    set_serving,
    stop_gracefully,
    wait_for_shutdown_signal,
)
from services.shared.service_main import run_service
from services.store.database import Database
from services.store.errors import StoreUnavailable
from services.store.waiting import open_store
from telemetry.metrics import serve_metrics

log = logging.getLogger("gateway.auth")

SERVICE_NAME = ext_authz_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_RETENTION_SWEEP_SECONDS = 3600.0


async def prune_audit(database: Database, retention_days: float, now: float) -> int:
    """Deletes the audit records older than the retention; how many there were."""
    deleted = await database.audit.delete_before(now - retention_days * 86400)
    if deleted:
        log.info("deleted %d audit records older than %g days", deleted, retention_days)
    return deleted


async def prune_audit_forever(database: Database, retention_days: float) -> None:
    while True:
        try:
            await prune_audit(database, retention_days, time.time())
        except StoreUnavailable as error:
            log.warning("audit retention skipped: %s", error)
        await asyncio.sleep(_RETENTION_SWEEP_SECONDS)


async def serve(settings: AuthSettings) -> int:
    database = await open_store(settings.store_url())
    log.info("keys and audit records in %s", database.url)
    audit = AuditLog(database.audit)
    audit.start()
    keys = CachedKeyDirectory(database.keys, settings.key_cache_seconds, settings.key_stale_seconds)
    authorizer = Authorizer(keys, TokenPolicy(settings.token_limits()))

    server = create_service_server(settings)
    ext_authz_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationServicer(authorizer, audit), server)
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(database, RequestAudit(audit)), server)
    health_servicer = await add_health_and_reflection(server, [SERVICE_NAME, IDENTITY_SERVICE_NAME])
    bind(server, settings.listen, settings.tls_files())
    await server.start()
    await set_serving(health_servicer, [SERVICE_NAME, IDENTITY_SERVICE_NAME])
    serve_metrics(settings.metrics_listen)
    retention = asyncio.create_task(prune_audit_forever(database, settings.audit_retention_days))
    log.info("listening on %s", settings.listen)
    log.info("stopping on %s", (await wait_for_shutdown_signal()).name)
    retention.cancel()
    await stop_gracefully(server, health_servicer, settings.shutdown_grace_seconds)
    await audit.close()
    await database.close()
    log.info("stopped")
    return 0


def main() -> None:
    run_service("auth", AuthSettings(_cli_parse_args=True), serve)
