"""Runs meshserve's processes on one machine: starts them, waits for health, stops them on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.settings import LauncherSettings
from services.shared.certs import ensure_dev_certs
from services.shared.tls import TlsFiles, channel_credentials

log = logging.getLogger(__name__)

# The identity the command-line client presents to the mesh.
CLIENT_IDENTITY = "cli"
_STOP_GRACE_SECONDS = 15.0


class Child:
    """One service process, its output in a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *self.args, stdout=log_file, stderr=log_file, start_new_session=True
            )

    async def stop(self) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), _STOP_GRACE_SECONDS)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


async def wait_serving(address: str, tls: TlsFiles, child: Child, timeout: float) -> None:
    """Waits for SERVING, showing progress; fails early if the child dies."""
    started = time.monotonic()
    async with grpc.aio.secure_channel(address, channel_credentials(tls)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - started < timeout:
            assert child.process is not None
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}; see {child.log_path}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    print(f"\r{child.name}: SERVING after {time.monotonic() - started:.1f}s   ", file=sys.stderr)
                    return
            except grpc.aio.AioRpcError:
                pass
            print(f"\r{child.name}: loading ({time.monotonic() - started:.0f}s)", end="", file=sys.stderr)
            await asyncio.sleep(0.25)
    raise TimeoutError(f"{child.name} was not SERVING after {timeout:.0f}s; see {child.log_path}")


def inference_child(settings: LauncherSettings, tls: TlsFiles) -> Child:
    args = [
        "-m", "services.inference",
        "--config", str(settings.config),
        "--listen", settings.inference_address,
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca),
    ]  # fmt: skip
    return Child("inference", args, settings.logs_dir / "inference.log")


async def run_up(settings: LauncherSettings) -> int:
    certs = ensure_dev_certs(settings.certs_dir, ["inference", CLIENT_IDENTITY])
    child = inference_child(settings, certs["inference"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await child.start()
    try:
        startup = asyncio.create_task(
            wait_serving(settings.inference_address, certs[CLIENT_IDENTITY], child, settings.startup_timeout_seconds)
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({startup, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if startup.done():
            startup.result()
            print_ready(settings)
            exited = asyncio.create_task(child.process.wait())
            await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                print(f"{child.name} exited with {exited.result()}; see {child.log_path}", file=sys.stderr)
                return 1
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"\n{error}", file=sys.stderr)
        return 1
    finally:
        print("stopping...", file=sys.stderr)
        await child.stop()
        print("stopped", file=sys.stderr)


def print_ready(settings: LauncherSettings) -> None:
    print(
        f"""
meshserve is up. The inference service listens on {settings.inference_address} (mTLS).
  stream a reply:   .venv/bin/meshserve generate "Write a haiku about the sea"
  logs:             {settings.logs_dir}/
Press Ctrl-C to stop.""",
        file=sys.stderr,
        flush=True,
    )
