"""The `meshserve` command: up, certs, generate."""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from meshserve.inference.v1 import inference_pb2 as pb
from meshserve.inference.v1 import inference_pb2_grpc

from orchestrator.launcher import CLIENT_IDENTITY, run_up
from orchestrator.settings import LauncherSettings
from services.shared.certs import ensure_dev_certs
from services.shared.status_details import details_of
from services.shared.tls import channel_credentials


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshserve", description="Run and call meshserve.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run meshserve in the foreground until Ctrl-C")
    commands.add_parser("certs", help="create the development CA and service certificates")
    generate = commands.add_parser("generate", help="stream a completion")
    generate.add_argument("prompt")
    generate.add_argument("--chat", action="store_true", help="send the prompt as a user chat message")
    generate.add_argument("--max-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    return parser.parse_args(argv)


def generate(settings: LauncherSettings, args: argparse.Namespace) -> int:
    tls = ensure_dev_certs(settings.certs_dir, [CLIENT_IDENTITY])[CLIENT_IDENTITY]
    request = pb.GenerateRequest(max_tokens=args.max_tokens)
    if args.chat:
        request.messages.append(pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=args.prompt))
    else:
        request.prompt = args.prompt
    if args.temperature is not None:
        request.temperature = args.temperature
    if args.seed is not None:
        request.seed = args.seed
    with grpc.secure_channel(settings.inference_address, channel_credentials(tls)) as channel:
        try:
            for message in inference_pb2_grpc.InferenceServiceStub(channel).Generate(request, timeout=args.timeout):
                print(message.text, end="", flush=True)
                if message.finish_reason:
                    finish = pb.FinishReason.Name(message.finish_reason)
                    usage = message.usage
                    print(f"\n[{finish}: {usage.input_tokens} prompt + {usage.output_tokens} generated tokens]",
                          file=sys.stderr)  # fmt: skip
        except grpc.RpcError as error:
            details = details_of(error)
            print(f"\nerror: {details.code.name} {details.reason or ''}: {details.message}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = LauncherSettings()
    if args.command == "up":
        raise SystemExit(asyncio.run(run_up(settings)))
    if args.command == "certs":
        for service, files in ensure_dev_certs(settings.certs_dir, ["inference", CLIENT_IDENTITY]).items():
            print(f"{service}: {files.cert}")
        raise SystemExit(0)
    raise SystemExit(generate(settings, args))
