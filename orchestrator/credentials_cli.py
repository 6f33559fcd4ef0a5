"""`meshserve keys`, `meshserve token` and `meshserve audit`: the store's keys and audit log, read and
written directly, as an operator does from a machine that reaches the database."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime

from orchestrator.settings import LauncherSettings
from services.identity.dev_issuer import DevIssuer
from services.identity.key_admin import KeyTerms, issue_key, revoke_key, rotate_key
from services.shared.domain import Priority
from services.shared.identity import Scope
from services.store.database import open_database
from services.store.errors import StoreUnavailable
from services.store.records import KeyRecord

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """'90s', '15m', '1h', '30d' as seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 15m, 1h or 30d, not {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def scope_list(text: str) -> tuple[Scope, ...]:
    try:
        return tuple(Scope(name.strip()) for name in text.split(",") if name.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"scopes are {', '.join(s.value for s in Scope)}, not {text!r}") from None


def add_commands(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="issue, list, rotate and revoke API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="issue a key; it is printed once, only its hash is stored")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", type=scope_list, default=(Scope.INFERENCE,), help="inference,jobs,admin")
    create.add_argument("--max-priority", choices=[p.name for p in Priority], default="NORMAL")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens (prompt + completion) per minute")
    create.add_argument("--max-concurrent", type=int, help="requests running at once")
    create.add_argument("--expires", type=duration_seconds, help="lifetime, such as 30d")
    listing = keys.add_parser("list", help="the keys, without their secrets")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true")
    keys.add_parser("revoke", help="revoke a key (within a second)").add_argument("key_id")
    rotate = keys.add_parser("rotate", help="a new secret for a key; prints it once")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", type=duration_seconds, default=0.0, help="how long the old secret still works")
    token = commands.add_parser("token", help="mint a JWT from the development issuer")
    token.add_argument("--scopes", type=scope_list, default=(Scope.INFERENCE,))
    token.add_argument("--ttl", type=duration_seconds, default=3600.0)
    token.add_argument("--subject", default="developer")
    token.add_argument("--alg", choices=["RS256", "ES256"], default="RS256")
    audit = commands.add_parser("audit", help="read the audit log")
    audit.add_argument("--since", type=duration_seconds, default=3600.0, help="how far back, such as 1h")
    audit.add_argument("--key", help="only this key id (or subject)")
    audit.add_argument("--limit", type=int, default=1000)
    audit.add_argument("--json", action="store_true", help="one JSON object per line")


def run(settings: LauncherSettings, args: argparse.Namespace) -> int:
    if args.command == "token":
        issuer = DevIssuer(settings.dev_issuer_dir)
        if not issuer.key_file(args.alg).exists():
            print(f"meshserve: no development issuer in {settings.dev_issuer_dir}; run `meshserve up` first",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(issuer.mint(args.subject, [scope.value for scope in args.scopes], args.ttl, args.alg))
        return 0
    try:
        return asyncio.run(_with_store(settings, args))
    except StoreUnavailable as error:
        print(f"meshserve: {error}", file=sys.stderr)
        return 1
    except (LookupError, ValueError) as error:
        print(f"meshserve: {error}", file=sys.stderr)
        return 1


async def _with_store(settings: LauncherSettings, args: argparse.Namespace) -> int:
    async with await open_database(settings.store_url()) as database:
        if args.command == "audit":
            subject = args.key if not args.key or ":" in args.key else f"key:{args.key}"
            records = await database.audit.query(time.time() - args.since, subject, args.limit)
            for record in records:
                print(json.dumps(asdict(record)) if args.json else _audit_line(record))
            return 0
        command = args.keys_command
        if command == "create":
            terms = KeyTerms(args.name, args.scopes, Priority[args.max_priority], args.rpm, args.tpm,
                             args.max_concurrent, args.expires)  # fmt: skip
            issued = await issue_key(database.keys, terms)
            print(issued.key)
            print(f"key {issued.record.key_id} ({terms.name}): store it now, it is not shown again", file=sys.stderr)
        elif command == "rotate":
            issued = await rotate_key(database.keys, args.key_id, args.grace)
            print(issued.key)
        elif command == "revoke":
            await revoke_key(database.keys, args.key_id)
            print(f"revoked {args.key_id}", file=sys.stderr)
        else:
            _print_keys(await database.keys.list(include_revoked=args.all), args.json)
    return 0


def _when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_keys(records: list[KeyRecord], as_json: bool) -> None:
    for record in records:
        if as_json:
            shown = {k: v for k, v in asdict(record).items() if k not in ("secret_hash", "previous_secret_hash")}
            print(json.dumps(shown))
            continue
        limits = f"rpm={record.requests_per_minute or '-'} tpm={record.tokens_per_minute or '-'}"
        state = "revoked" if record.revoked_at else "active"
        print(f"{record.key_id}  {record.name:<20}  {','.join(record.scopes):<22}  max={record.max_priority:<8}  "
              f"{limits}  expires={_when(record.expires_at)}  {state}")  # fmt: skip


def _audit_line(record) -> str:
    tokens = f"{record.input_tokens}+{record.output_tokens} tokens"
    return (f"{_when(record.at)}  {record.subject or '-':<22}  {record.surface:<6}  {record.route:<48}  "
            f"{record.status} {record.outcome:<9} {record.reason or '-':<22}  {record.model or '-'}  "
            f"{record.priority or '-'}  {tokens}  {record.latency_ms:.1f}ms  {record.trace_id or '-'}")  # fmt: skip
