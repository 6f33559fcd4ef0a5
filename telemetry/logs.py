"""Logs as JSON lines on stderr, one object per record, for every service."""

from __future__ import annotations

import json
import logging
import sys
import time

from opentelemetry import trace


class JsonLineFormatter(logging.Formatter):
    def __init__(self, service_name: str) -> None:
        super().__init__()
        self._service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service_name,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Inside a request, every line names its trace and span, so logs and traces join up.
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class StreamClosedElsewhere(logging.Filter):
    """Drops OpenTelemetry's "Failed to detach context" for a token made in another context.

    The gRPC server instrumentation keeps its span current across the yields of a streaming handler; when a
    client cancels, grpc closes that handler from another task, and detaching the token there fails (the
    span itself still ends). It is opentelemetry-python-contrib issue 2357, harmless, and logged with a
    traceback for every cancelled stream: at scale the formatting alone costs a busy gateway a tenth of its
    CPU. Any other failure to detach is still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Failed to detach context" or not record.exc_info:
            return True
        error = record.exc_info[1]
        return not (isinstance(error, ValueError) and "was created in a different Context" in str(error))


def configure_logging(service_name: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter(service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("opentelemetry.context").addFilter(StreamClosedElsewhere())
