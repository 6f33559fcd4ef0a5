"""The authorization service's refusals, in the shape each surface reads."""

from __future__ import annotations

import base64
import json

from google.rpc import error_details_pb2, status_pb2

from gateway.auth.answers import GRPC_STATUS_DETAILS, refuse
from services.shared.errors import headers_too_large, unauthenticated
from services.shared.identity import Surface

CHALLENGE = 'Bearer realm="meshserve"'


def headers_of(response) -> dict[str, str]:
    return {option.header.key: option.header.value for option in response.denied_response.headers}


def test_a_grpc_caller_gets_the_status_with_its_error_info_in_the_details_trailer() -> None:
    response = refuse(unauthenticated("KEY_REVOKED", "the API key was revoked"), Surface.GRPC, "application/grpc",
                      CHALLENGE)  # fmt: skip
    assert response.denied_response.status.code == 401
    assert response.denied_response.body == "KEY_REVOKED: the API key was revoked"
    encoded = headers_of(response)[GRPC_STATUS_DETAILS]
    status = status_pb2.Status.FromString(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    # grpc-status accepts the details only when their code and message are the call's own.
    assert (status.code, status.message) == (16, response.denied_response.body)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "KEY_REVOKED"


def test_a_rest_caller_gets_the_status_as_json_and_no_grpc_trailer() -> None:
    response = refuse(unauthenticated("KEY_REVOKED", "the API key was revoked"), Surface.REST, "application/json",
                      CHALLENGE)  # fmt: skip
    headers = headers_of(response)
    assert GRPC_STATUS_DETAILS not in headers and headers["www-authenticate"] == CHALLENGE
    body = json.loads(response.denied_response.body)
    assert body["code"] == 16 and body["details"][0]["reason"] == "KEY_REVOKED"


def test_headers_too_large_is_431_over_http_and_resource_exhausted_over_grpc() -> None:
    error = headers_too_large(40_000, 32_768)
    grpc_answer = refuse(error, Surface.GRPC, "application/grpc", CHALLENGE)
    assert grpc_answer.denied_response.status.code == 431
    # Envoy maps 431 to UNKNOWN on its own, so the code is set explicitly.
    assert headers_of(grpc_answer)["grpc-status"] == "8"
    rest_answer = refuse(error, Surface.REST, "application/json", CHALLENGE)
    assert rest_answer.denied_response.status.code == 431
    assert json.loads(rest_answer.denied_response.body)["details"][0]["reason"] == "HEADERS_TOO_LARGE"
    openai_answer = json.loads(refuse(error, Surface.OPENAI, "application/json", CHALLENGE).denied_response.body)
    assert openai_answer["error"]["type"] == "invalid_request_error"
    assert openai_answer["error"]["code"] == "headers_too_large"
