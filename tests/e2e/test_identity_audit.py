"""The audit log on the real mesh: one record per request on every surface, refusals at the door included,
read back with `meshserve audit`; never a prompt or a completion."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import httpx

from services.identity.dev_issuer import DEV_ISSUER
from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import bearer, create_key, meshserve
from tests.e2e.surfaces import SURFACES, ask
from tests.e2e.test_identity import grpc_generate, sdk
from tests.e2e.test_mesh_failures import pid_of, wait_for_replacement
from tests.e2e.test_mesh_scheduling import wait_for

AUTH = ("gateway.auth", "auth")

SECRET_PROMPT = "The password to the vault is swordfish-7731"


def audit_of(mesh: Mesh, key_id: str) -> list[dict]:
    done = meshserve(mesh, "audit", "--since", "1h", "--key", key_id, "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def records_appear(mesh: Mesh, key_id: str, count: int) -> list[dict]:
    found: list[dict] = []

    def enough() -> bool:
        found[:] = audit_of(mesh, key_id)
        return len(found) >= count

    wait_for(enough, 15.0, f"{count} audit records of {key_id}")
    return found


def test_every_served_request_is_audited_on_every_surface(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference", "--max-priority", "HIGH")
    rest = mesh.post_generate({"prompt": SECRET_PROMPT, "max_tokens": 3, "priority": "PRIORITY_CRITICAL"},
                              headers=bearer(key))  # fmt: skip
    assert rest.status == 200
    chat = sdk(mesh, key).chat.completions.with_raw_response.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": SECRET_PROMPT}], max_tokens=2
    )
    grpc_generate(mesh, key)
    records = records_appear(mesh, key_id, 3)
    by_surface = {record["surface"]: record for record in records}
    assert set(by_surface) == {"rest", "openai", "grpc"}
    native = by_surface["rest"]
    assert native["subject"] == f"key:{key_id}" and native["route"] == "POST /v1/generate"
    assert (native["outcome"], native["status"], native["reason"]) == ("ok", 200, "")
    assert native["model"] == "gemma-3-270m" and native["priority"] == "HIGH", "served at the key's ceiling"
    assert native["input_tokens"] > 0 and native["output_tokens"] == 3 and native["latency_ms"] > 0
    assert native["trace_id"] == rest.trace_id
    assert by_surface["openai"]["route"] == "POST /v1/chat/completions"
    assert by_surface["openai"]["trace_id"] == chat.headers["x-meshserve-trace-id"]
    assert by_surface["grpc"]["route"] == "/meshserve.gateway.v1.GatewayService/Generate"


def test_refusals_are_audited_with_their_reason(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference", "--rpm", "1")
    assert mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=bearer(key)).status == 200
    assert httpx.get(f"{mesh.http}/v1/gpu/status", headers=bearer(key), timeout=10).status_code == 403
    assert mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=bearer(key)).status == 429
    assert meshserve(mesh, "keys", "revoke", key_id).returncode == 0
    wait_for(lambda: mesh.get_json("/v1/mesh/models", headers=bearer(key))[0] == 401, 5.0, "the revocation")
    records = records_appear(mesh, key_id, 4)
    outcomes = {(record["status"], record["reason"]) for record in records}
    assert {(200, ""), (403, "SCOPE_MISSING"), (429, "RATE_LIMITED"), (401, "KEY_REVOKED")} <= outcomes


def test_the_audit_log_never_holds_prompts_or_completions(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference")
    reply = mesh.post_generate({"prompt": SECRET_PROMPT, "max_tokens": 24}, headers=bearer(key))
    completion = reply.text.strip()
    # A few tokens of digits can match a timestamp or a trace id by chance; two dozen tokens cannot.
    assert len(completion) >= 16, completion
    records_appear(mesh, key_id, 1)
    with sqlite3.connect(mesh.state_dir / "meshserve.db") as database:
        stored = json.dumps(database.execute("SELECT * FROM audit").fetchall())
    assert "swordfish" not in stored and completion not in stored


def test_the_audit_command_prints_a_readable_table(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference")
    assert mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, headers=bearer(key)).status == 200
    records_appear(mesh, key_id, 1)
    table = meshserve(mesh, "audit", "--since", "10m", "--key", key_id)
    assert table.returncode == 0 and f"key:{key_id}" in table.stdout and "POST /v1/generate" in table.stdout


def test_what_the_openai_front_refuses_itself_is_audited_too(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference")
    reply = httpx.post(f"{mesh.http}/v1/chat/completions", content=b"{not json", timeout=30,
                       headers={**bearer(key), "content-type": "application/json"})  # fmt: skip
    assert reply.status_code == 400
    (record,) = records_appear(mesh, key_id, 1)
    assert (record["surface"], record["route"], record["status"], record["outcome"]) == (
        "openai",
        "POST /v1/chat/completions",
        400,
        "refused",
    )
    assert record["trace_id"] == reply.headers["x-meshserve-trace-id"]


def test_a_token_is_audited_under_its_subject_on_every_surface(mesh: Mesh) -> None:
    subject = f"grace-{time.monotonic_ns()}"
    minted = meshserve(mesh, "token", "--scopes", "inference", "--ttl", "10m", "--subject", subject)
    assert minted.returncode == 0, minted.stderr
    answers = [ask(mesh, surface, bearer(minted.stdout.strip())) for surface in SURFACES]
    assert [answer.status for answer in answers] == [200, 200, 200], answers
    found: list[dict] = []

    def all_recorded() -> bool:
        done = meshserve(mesh, "audit", "--since", "10m", "--json")
        found[:] = [record for record in map(json.loads, done.stdout.splitlines()) if subject in record["subject"]]
        return len(found) >= len(SURFACES)

    wait_for(all_recorded, 15.0, "the token's audit records")
    assert {record["subject"] for record in found} == {f"jwt:{DEV_ISSUER}#{subject}"}
    assert {record["surface"] for record in found} == set(SURFACES)
    assert {record["trace_id"] for record in found} == {answer.trace_id for answer in answers}


def test_records_older_than_the_retention_are_deleted_by_the_sweep(mesh: Mesh) -> None:
    # Records as the audit log wrote them 91 days and one day ago; the retention is the default 90 days.
    now, day, subject = time.time(), 86400, f"key:kretention{time.monotonic_ns() % 10**6:06d}"
    with sqlite3.connect(mesh.state_dir / "meshserve.db") as database:
        for age_days, trace_id in ((91, "old-1"), (95, "old-2"), (1, "recent")):
            database.execute(
                "INSERT INTO audit (at, subject, surface, route, model, priority, outcome, status, reason, "
                "input_tokens, output_tokens, latency_ms, trace_id) "
                "VALUES (?, ?, 'rest', 'POST /v1/generate', 'gemma-3-270m', 'NORMAL', 'ok', 200, '', 1, 1, 1.0, ?)",
                (now - age_days * day, subject, trace_id),
            )
    # The authorization service sweeps when it starts, then hourly: a restarted one sweeps at once.
    old_pid = pid_of(mesh, AUTH)
    os.kill(old_pid, signal.SIGKILL)
    wait_for_replacement(mesh, AUTH, old_pid)

    def kept() -> list[str]:
        with sqlite3.connect(mesh.state_dir / "meshserve.db") as database:
            rows = database.execute("SELECT trace_id FROM audit WHERE subject = ?", (subject,)).fetchall()
        return [row[0] for row in rows]

    wait_for(lambda: kept() == ["recent"], 30.0, "the sweep deleting the old records", 0.2)
    assert "older than 90 days" in mesh.log("auth")
