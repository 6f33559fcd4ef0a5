"""`meshserve generate --show-trace` links the request's trace, or says that tracing is off and how to turn it on."""

from __future__ import annotations

import pytest

from orchestrator.cli import show_trace
from orchestrator.settings import LauncherSettings
from telemetry.spans import TRACE_ID_HEADER


def test_a_trace_id_is_printed_with_its_jaeger_link(capsys: pytest.CaptureFixture[str]) -> None:
    show_trace(LauncherSettings(jaeger_ui="http://jaeger:16686"), [(TRACE_ID_HEADER, "ab" * 16)])
    assert capsys.readouterr().err.strip() == f"trace {'ab' * 16}: http://jaeger:16686/trace/{'ab' * 16}"


@pytest.mark.parametrize("metadata", [[(TRACE_ID_HEADER, "")], [], None])
def test_without_a_trace_id_it_says_tracing_is_off_and_how_to_turn_it_on(
    capsys: pytest.CaptureFixture[str], metadata
) -> None:
    show_trace(LauncherSettings(), metadata)
    printed = capsys.readouterr().err
    assert "tracing is off" in printed and "OTEL_EXPORTER_OTLP_ENDPOINT=" in printed
    assert "/trace/" not in printed
