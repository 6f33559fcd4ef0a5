"""`meshserve up`: the whole mesh on one machine, in the foreground, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.mesh_plan import IDENTITIES, edge_writer_argv, plan_mesh, port_clashes
from orchestrator.settings import LauncherSettings
from orchestrator.supervisor import Supervisor
from services.identity.dev_issuer import DevIssuer
from services.identity.key_admin import ensure_development_key
from services.shared.certs import ensure_dev_certs
from services.shared.mesh_config import load_mesh_config
from services.shared.tls import TlsFiles, channel_credentials
from services.store.database import open_database
from services.store.errors import StoreUnavailable


def prepare_edge(settings: LauncherSettings, certs: dict[str, TlsFiles]) -> Path:
    """Has the gateway's edge writer write the descriptor set and the Envoy bootstrap; returns the bootstrap's path."""
    written = subprocess.run(edge_writer_argv(settings, certs["edge"]), capture_output=True, text=True, check=False)
    if written.returncode != 0:
        raise RuntimeError(f"the Envoy bootstrap could not be written:\n{written.stderr}")
    return Path(written.stdout.strip().splitlines()[-1])


def edge_is_healthy(settings: LauncherSettings) -> bool:
    try:
        with urllib.request.urlopen(f"http://{settings.address(settings.edge_http_port)}/healthz", timeout=1) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def serving_children(supervisor: Supervisor, identity: TlsFiles) -> set[str]:
    serving = set()
    for child in supervisor.children:
        if child.spec.health_address is None:
            continue
        async with grpc.aio.secure_channel(child.spec.health_address, channel_credentials(identity)) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    serving.add(child.spec.name)
            except grpc.aio.AioRpcError:
                pass
    return serving


async def wait_until_ready(settings: LauncherSettings, supervisor: Supervisor, identity: TlsFiles) -> None:
    """Shows which services are up while the mesh starts; returns once /healthz answers 200."""
    started, shown = time.monotonic(), None
    while time.monotonic() - started < settings.startup_timeout_seconds:
        if await asyncio.to_thread(edge_is_healthy, settings):
            print(f"meshserve: every service is SERVING after {time.monotonic() - started:.1f}s", file=sys.stderr)
            return
        serving = await serving_children(supervisor, identity)
        waiting = [c.spec.name for c in supervisor.children if c.spec.health_address and c.spec.name not in serving]
        progress = f"waiting for: {', '.join(waiting)}" if waiting else "waiting for the edge"
        if progress != shown:
            print(f"meshserve: {progress} ({time.monotonic() - started:.0f}s)", file=sys.stderr, flush=True)
            shown = progress
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the mesh was not ready after {settings.startup_timeout_seconds:.0f}s; see {settings.logs_dir}")


async def prepare_credentials(settings: LauncherSettings) -> None:
    """The development issuer's keys, and a development admin key in the state directory (mode 0600).

    Opening the store here also migrates it, once, before the services that use it start.
    """
    DevIssuer(settings.dev_issuer_dir).ensure()
    async with await open_database(settings.store_url()) as database:
        _, issued = await ensure_development_key(database.keys, settings.api_key_file)
    if issued:
        print(f"meshserve: issued a development admin key into {settings.api_key_file}", file=sys.stderr)


async def run_up(settings: LauncherSettings) -> int:
    mesh = load_mesh_config(settings.config)
    if clashes := port_clashes(settings, mesh):
        print(f"meshserve: cannot start: {'; '.join(clashes)}; move one with its MESHSERVE_*_PORT", file=sys.stderr)
        return 2
    try:
        await prepare_credentials(settings)
    except StoreUnavailable as error:
        print(f"meshserve: cannot start: {error}", file=sys.stderr)
        return 2
    certs = ensure_dev_certs(settings.certs_dir, list(IDENTITIES))
    supervisor = Supervisor(plan_mesh(settings, mesh, certs, prepare_edge(settings, certs)), settings.logs_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start_all()
    keeping = asyncio.create_task(supervisor.keep_running())
    try:
        ready = asyncio.create_task(wait_until_ready(settings, supervisor, certs["cli"]))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            ready.result()
            print_ready(settings)
            await stopping
        return 0
    except TimeoutError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        print("meshserve: stopping...", file=sys.stderr, flush=True)
        await supervisor.stop_all()
        keeping.cancel()
        print("meshserve: stopped", file=sys.stderr, flush=True)


def print_ready(settings: LauncherSettings) -> None:
    http = f"http://{settings.address(settings.edge_http_port)}"
    key = f'-H "authorization: Bearer $(cat {settings.api_key_file})"'
    print(
        f"""
meshserve is up. The default model, gemma-3-270m, is a small base model: it continues text.
Every route but /healthz needs a credential: the development admin key is in {settings.api_key_file}.
  stream over gRPC:  .venv/bin/meshserve generate "Once upon a time, in a small village by the sea,"
  stream over REST:  curl -N {http}/v1/generate {key} \\
                       -d '{{"prompt":"The three primary colours are","max_tokens":16}}'
  OpenAI API:        curl {http}/v1/completions {key} -H 'content-type: application/json' \\
                       -d '{{"model":"gemma-3-270m","prompt":"The three primary colours are","max_tokens":16}}'
  over TLS:          curl --cacert {settings.certs_dir}/ca.pem {key} https://localhost:{settings.edge_https_port}/v1/models
  models, devices:   curl {key} {http}/v1/mesh/models ; curl {key} {http}/v1/gpu/status
  keys and tokens:   .venv/bin/meshserve keys list ; .venv/bin/meshserve token --scopes inference
  logs:              {settings.logs_dir}/
Press Ctrl-C to stop.""",
        file=sys.stderr,
        flush=True,
    )
