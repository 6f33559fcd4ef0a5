"""The `meshserve` command: up, certs, status, generate; keys, token and audit (credentials_cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from orchestrator import credentials_cli
from orchestrator.launcher import run_up
from orchestrator.mesh_plan import IDENTITIES
from orchestrator.settings import LauncherSettings
from orchestrator.status import render
from services.identity.key_file import read_key_file
from services.shared.certs import ensure_dev_certs, rotate_certs
from services.shared.status_details import details_of
from telemetry.spans import TRACE_ID_HEADER

PRIORITIES = ("LOW", "NORMAL", "HIGH", "CRITICAL")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshserve", description="Run and call meshserve.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run the whole mesh in the foreground until Ctrl-C")
    certs = commands.add_parser("certs", help="create the development CA and service certificates")
    certs.add_argument("--rotate", action="store_true",
                       help="issue every service a new key and certificate; a running mesh takes them up")  # fmt: skip
    status = commands.add_parser("status", help="devices, pressure, queue, slots and resident models")
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    status.add_argument("--plaintext", action="store_true", help="use the loopback plain listener, not TLS")
    generate = commands.add_parser("generate", help="stream a completion through the edge over gRPC")
    generate.add_argument("prompt")
    generate.add_argument("--model", default="", help="a configured model (default: the first)")
    generate.add_argument("--chat", action="store_true", help="send the prompt as a user chat message")
    generate.add_argument("--max-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--priority", choices=PRIORITIES, default="NORMAL")
    generate.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    generate.add_argument("--plaintext", action="store_true", help="use the loopback plain listener, not TLS")
    generate.add_argument("--show-trace", action="store_true", help="print the request's trace id and Jaeger link")
    for command in (status, generate):
        command.add_argument(
            "--api-key", default=None, help="the credential to send (default: $MESHSERVE_API_KEY, else the state dir's)"
        )
    credentials_cli.add_commands(commands)
    return parser.parse_args(argv)


def credential(settings: LauncherSettings, args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The call's authorization metadata: --api-key, $MESHSERVE_API_KEY, or the development key `up` wrote."""
    key = args.api_key or settings.api_key or read_key_file(settings.api_key_file)
    return (("authorization", f"Bearer {key}"),) if key else ()


def edge_channel(settings: LauncherSettings, plaintext: bool) -> grpc.Channel:
    if plaintext:
        return grpc.insecure_channel(settings.address(settings.edge_http_port))
    ca = (settings.certs_dir / "ca.pem").read_bytes()
    return grpc.secure_channel(
        f"localhost:{settings.edge_https_port}", grpc.ssl_channel_credentials(root_certificates=ca)
    )


def generate_request(args: argparse.Namespace) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=args.model, max_tokens=args.max_tokens)
    request.priority = pb.Priority.Value(f"PRIORITY_{args.priority}")
    if args.chat:
        request.messages.append(pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=args.prompt))
    else:
        request.prompt = args.prompt
    if args.temperature is not None:
        request.temperature = args.temperature
    if args.seed is not None:
        request.seed = args.seed
    return request


TRACING_IS_OFF = (
    "\ntrace: tracing is off in this mesh. Start it with OTEL_EXPORTER_OTLP_ENDPOINT set to an OTLP/gRPC "
    "collector, such as Jaeger's: OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 make up"
)


def show_trace(settings: LauncherSettings, metadata) -> None:
    trace_id = next((value for key, value in metadata or () if key == TRACE_ID_HEADER), "")
    # The gateway sends an empty id when it records no spans: there is no trace to link to.
    if not trace_id:
        print(TRACING_IS_OFF, file=sys.stderr)
        return
    print(f"\ntrace {trace_id}: {settings.jaeger_ui}/trace/{trace_id}", file=sys.stderr)


def generate(settings: LauncherSettings, args: argparse.Namespace) -> int:
    with edge_channel(settings, args.plaintext) as channel:
        call = gateway_pb2_grpc.GatewayServiceStub(channel).Generate(
            generate_request(args), timeout=args.timeout, metadata=credential(settings, args)
        )
        try:
            for message in call:
                print(message.text, end="", flush=True)
                if message.finish_reason:
                    finish = pb.FinishReason.Name(message.finish_reason)
                    usage = message.usage
                    summary = f"{usage.input_tokens} prompt + {usage.output_tokens} generated tokens"
                    print(f"\n[{message.model} {finish}: {summary}]", file=sys.stderr)
        except grpc.RpcError as error:
            details = details_of(error)
            retry = f" (retry in {details.retry_after_seconds:.2f}s)" if details.retry_after_seconds else ""
            print(f"\nerror: {details.code.name} {details.reason or ''}: {details.message}{retry}", file=sys.stderr)
            if args.show_trace:
                show_trace(settings, error.trailing_metadata())
            return 1
        if args.show_trace:
            show_trace(settings, call.initial_metadata())
    return 0


def show_status(settings: LauncherSettings, args: argparse.Namespace) -> int:
    with edge_channel(settings, args.plaintext) as channel:
        try:
            state = gateway_pb2_grpc.GatewayServiceStub(channel).GetSchedulerState(
                pb.GetSchedulerStateRequest(), timeout=10, metadata=credential(settings, args)
            )
        except grpc.RpcError as error:
            details = details_of(error)
            print(f"error: {details.code.name} {details.reason or ''}: {details.message}", file=sys.stderr)
            return 1
    print(render(state, args.json))
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = LauncherSettings()
    if args.command == "up":
        raise SystemExit(asyncio.run(run_up(settings)))
    if args.command == "status":
        raise SystemExit(show_status(settings, args))
    if args.command in ("keys", "token", "audit"):
        raise SystemExit(credentials_cli.run(settings, args))
    if args.command == "certs":
        write = rotate_certs if args.rotate else ensure_dev_certs
        for identity, files in write(settings.certs_dir, list(IDENTITIES)).items():
            print(f"{identity}: {files.cert}")
        raise SystemExit(0)
    raise SystemExit(generate(settings, args))
