"""Per-key limits on a real mesh of two gateway replicas: requests and tokens per minute, requests at once and
the priority ceiling, answered 429 with Retry-After and x-ratelimit-* on every surface, and held whichever
replica serves each request. Keys go in as a client sends them, through Envoy."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.identity_support import bearer, create_key
from tests.e2e.sse import OpenStream
from tests.e2e.surfaces import SURFACES, Answer, ask
from tests.e2e.test_identity import caller_of
from tests.e2e.test_mesh_scheduling import LONG, is_a_token, wait_for
from tests.otlp_receiver import OtlpReceiver
from tests.support import write_model_config

REPLICAS = ("gateway", "gateway-1")


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver) -> Iterator[Mesh]:
    directory = tmp_path_factory.mktemp("replicated")
    config = write_model_config(directory, context_length=1024, slots=2)
    with running_mesh(directory, config, traces, {"MESHSERVE_GATEWAY_REPLICAS": "2"}) as mesh:
        yield mesh


def served_by(mesh: Mesh, answer: Answer) -> str:
    """The replica whose request log names the answer's trace."""
    (replica,) = [name for name in REPLICAS if f'"trace_id": "{answer.trace_id}"' in mesh.log(name)]
    return replica


def assert_rate_limited(answer: Answer, limit: str) -> None:
    assert (answer.status, answer.reason) == (429, "RATE_LIMITED"), answer
    assert answer.retry_after_seconds is not None and answer.retry_after_seconds > 0, answer
    if answer.surface != "openai":  # OpenAI's envelope has no place for ErrorInfo's metadata
        assert answer.metadata["limit"] == limit, answer


@pytest.mark.parametrize("surface", SURFACES)
def test_a_key_past_its_requests_per_minute_gets_429_with_the_limits(replicated: Mesh, surface: str) -> None:
    _, key = create_key(replicated, "--scopes", "inference", "--rpm", "2")
    assert [ask(replicated, surface, bearer(key)).status for _ in range(2)] == [200, 200]
    refused = ask(replicated, surface, bearer(key))
    assert_rate_limited(refused, "requests")
    assert refused.rate_limits["x-ratelimit-limit-requests"] == "2"
    assert refused.rate_limits["x-ratelimit-remaining-requests"] == "0"
    # OpenAI's own form of a duration: "1m0s", "59.3s".
    assert re.fullmatch(r"(\d+m)?\d+(\.\d+)?s", refused.rate_limits["x-ratelimit-reset-requests"]), refused


@pytest.mark.parametrize("surface", SURFACES)
def test_tokens_per_minute_are_counted_from_real_usage(replicated: Mesh, surface: str) -> None:
    _, key = create_key(replicated, "--scopes", "inference", "--tpm", "10")
    served = ask(replicated, surface, bearer(key), prompt="Once upon a time", max_tokens=8)
    assert served.status == 200 and served.tokens >= 10, served
    refused = ask(replicated, surface, bearer(key))
    assert_rate_limited(refused, "tokens")
    assert refused.rate_limits["x-ratelimit-remaining-tokens"] == "0"


@pytest.mark.parametrize("surface", SURFACES)
def test_a_key_at_its_concurrency_cap_is_refused_until_its_request_ends(replicated: Mesh, surface: str) -> None:
    _, key = create_key(replicated, "--scopes", "inference", "--max-concurrent", "1")
    held = OpenStream("127.0.0.1", replicated.port("edge_http"), LONG, headers=bearer(key))
    try:
        assert is_a_token(held.next_event())
        assert_rate_limited(ask(replicated, surface, bearer(key)), "concurrency")
    finally:
        held.close()
    # Its slot is given back once the gateway sees the stream gone; then the key may ask again.
    wait_for(lambda: ask(replicated, surface, bearer(key)).status == 200, 30.0, "the key's request ending", 0.2)


@pytest.mark.parametrize("surface", SURFACES)
def test_a_key_asking_above_its_ceiling_is_served_at_its_ceiling(replicated: Mesh, surface: str) -> None:
    key_id, key = create_key(replicated, "--scopes", "inference", "--max-priority", "LOW")
    served = ask(replicated, surface, bearer(key), priority="CRITICAL")
    assert served.status == 200, served
    assert caller_of(replicated, served.trace_id) == f"key:{key_id}"
    grant = next(line for line in replicated.log("scheduler").splitlines()
                 if served.trace_id in line and "granted" in line)  # fmt: skip
    assert f"to key:{key_id} at LOW" in grant


@pytest.mark.parametrize("surface", SURFACES)
def test_a_key_in_x_api_key_is_the_caller_whatever_internal_headers_the_client_adds(
    replicated: Mesh, surface: str
) -> None:
    key_id, key = create_key(replicated, "--scopes", "inference")
    forged = {"x-meshserve-caller": "key:kadmin", "x-meshserve-identity": "{}", "x-meshserve-edge": "1"}
    for credential in (bearer(key), {"x-api-key": key}):
        served = ask(replicated, surface, {**credential, **forged})
        assert served.status == 200, served
        assert caller_of(replicated, served.trace_id) == f"key:{key_id}"


def test_limits_hold_across_gateway_replicas_on_every_surface(replicated: Mesh) -> None:
    budget = 12
    _, key = create_key(replicated, "--scopes", "inference", "--rpm", str(budget))
    served = [ask(replicated, SURFACES[n % len(SURFACES)], bearer(key)) for n in range(budget)]
    assert all(answer.status == 200 for answer in served), served
    # Both replicas served the key: each counted what the other had let through.
    assert {served_by(replicated, answer) for answer in served} == set(REPLICAS)
    for surface in SURFACES:
        assert_rate_limited(ask(replicated, surface, bearer(key)), "requests")
