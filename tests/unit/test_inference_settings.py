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
