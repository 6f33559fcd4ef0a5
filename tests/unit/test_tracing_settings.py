import pytest

from services.inference.settings import InferenceSettings
from telemetry.tracing import TracingSettings


@pytest.mark.parametrize(
    ("settings", "enabled"),
    [
        (TracingSettings(), False),
        (TracingSettings(otlp_endpoint="http://127.0.0.1:4317"), True),
        (TracingSettings(otlp_endpoint="http://127.0.0.1:4317", sdk_disabled=True), False),
        (TracingSettings(otlp_endpoint="http://127.0.0.1:4317", traces_exporter="none"), False),
    ],
)
def test_traces_leave_the_process_only_when_an_endpoint_is_set_and_nothing_turns_them_off(
    settings: TracingSettings, enabled: bool
) -> None:
    assert settings.enabled is enabled


def test_services_read_the_standard_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracing = InferenceSettings(_cli_parse_args=["--plaintext"]).tracing()
    assert tracing == TracingSettings("http://collector:4317", True, "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317")
    assert InferenceSettings(_cli_parse_args=["--plaintext"]).tracing().otlp_endpoint == "http://traces:4317"
