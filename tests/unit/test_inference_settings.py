import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.inference.settings import InferenceSettings


def test_tls_is_required_unless_plaintext_is_asked_for() -> None:
    with pytest.raises(ValidationError, match="plaintext explicitly"):
        InferenceSettings(_cli_parse_args=[])
    assert InferenceSettings(_cli_parse_args=["--plaintext"]).tls_files() is None


def test_flags_and_environment_configure_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHSERVE_INFERENCE_LISTEN", "127.0.0.1:7000")
    settings = InferenceSettings(
        _cli_parse_args=["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem", "--model", "m"]
    )
    assert settings.listen == "127.0.0.1:7000"
    assert settings.model == "m"
    assert settings.tls_files().cert == Path("c.pem")


def test_an_endpoint_that_registers_advertises_an_address_others_reach() -> None:
    with pytest.raises(ValidationError, match="advertise"):
        InferenceSettings(_cli_parse_args=["--plaintext", "--listen", "0.0.0.0:50061", "--scheduler", "s:50051"])
    flags = ["--plaintext", "--listen", "0.0.0.0:50061", "--scheduler", "s:50051", "--advertise", "10.0.0.7:50061"]
    registering = InferenceSettings(_cli_parse_args=flags)
    assert registering.advertised_address() == "10.0.0.7:50061"
    # Not registering, nothing is advertised: the scheduler was given the address.
    assert InferenceSettings(_cli_parse_args=["--plaintext", "--listen", "0.0.0.0:50061"]).scheduler == ""


def test_the_node_name_defaults_to_the_host_and_cannot_break_a_device_id() -> None:
    assert InferenceSettings(_cli_parse_args=["--plaintext"]).node_name == socket.gethostname()
    with pytest.raises(ValidationError, match="node_name"):
        InferenceSettings(_cli_parse_args=["--plaintext", "--node-name", "a/b"])
