from pathlib import Path

import pytest
from pydantic import ValidationError

from services.gpu_monitor.core.sources import SourceMode
from services.gpu_monitor.settings import GpuMonitorSettings


def test_tls_is_required_unless_plaintext_is_asked_for() -> None:
    with pytest.raises(ValidationError, match="plaintext explicitly"):
        GpuMonitorSettings(_cli_parse_args=[])
    assert GpuMonitorSettings(_cli_parse_args=["--plaintext"]).tls_files() is None


def test_defaults() -> None:
    settings = GpuMonitorSettings(_cli_parse_args=["--plaintext"])
    assert settings.listen == "127.0.0.1:50071"
    assert settings.source_mode() is SourceMode.AUTO
    assert settings.interval_seconds == 1.0
    assert settings.node_name


def test_flags_and_environment_configure_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHSERVE_GPU_MONITOR_LISTEN", "127.0.0.1:7001")
    monkeypatch.setenv("MESHSERVE_GPU_MONITOR_SOURCE", "nvml")
    settings = GpuMonitorSettings(
        _cli_parse_args=[
            *("--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem"),
            *("--node-name", "rack1-node7", "--interval-seconds", "0.5"),
        ]
    )
    assert settings.listen == "127.0.0.1:7001"
    assert settings.source_mode() is SourceMode.NVML
    assert settings.node_name == "rack1-node7"
    assert settings.interval_seconds == 0.5
    assert settings.tls_files().cert == Path("c.pem")


@pytest.mark.parametrize(
    "flags",
    [
        ["--source", "gpu"],
        ["--interval-seconds", "0"],
        ["--interval-seconds", "61"],
        ["--node-name", ""],
        ["--node-name", "rack/node"],
    ],
)
def test_bad_settings_are_refused_at_start(flags: list[str]) -> None:
    with pytest.raises((ValidationError, SystemExit)):
        GpuMonitorSettings(_cli_parse_args=["--plaintext", *flags])
