"""OpenTelemetry's harmless failure to detach a context that a cancelled stream was closed in is not logged
(it came with a traceback for every cancelled stream); every other record of that logger still is."""

from __future__ import annotations

import contextvars
import logging

import pytest
from opentelemetry import context as otel_context

from telemetry.logs import StreamClosedElsewhere

OTEL_CONTEXT_LOGGER = logging.getLogger("opentelemetry.context")


def detach_in_another_context() -> None:
    elsewhere = contextvars.Context()
    token = elsewhere.run(otel_context.attach, otel_context.set_value("stream", "open"))
    otel_context.detach(token)


def failures_to_detach(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == "Failed to detach context"]


def test_a_context_detached_where_it_was_not_attached_is_logged_without_the_filter_and_dropped_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        detach_in_another_context()
    assert len(failures_to_detach(caplog)) == 1, "OpenTelemetry logs it by itself"
    caplog.clear()
    only_this_failure = StreamClosedElsewhere()
    OTEL_CONTEXT_LOGGER.addFilter(only_this_failure)
    try:
        with caplog.at_level(logging.ERROR):
            detach_in_another_context()
            OTEL_CONTEXT_LOGGER.error("Failed to detach context")  # without the exception: still logged
            OTEL_CONTEXT_LOGGER.error("some other failure")
    finally:
        OTEL_CONTEXT_LOGGER.removeFilter(only_this_failure)
    assert [record.getMessage() for record in caplog.records] == ["Failed to detach context", "some other failure"]
    assert all(record.exc_info is None for record in caplog.records)
