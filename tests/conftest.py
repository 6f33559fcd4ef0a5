"""Shared fixtures and the suite's order. A test that fails prints the logs of the services it used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests.support import VLLM_MISSING

# Cheap layers first, so a broken core fails in seconds; and every layer's servers are gone before the next.
LAYERS = ("unit", "integration", "e2e")
# How much of each log a failure report shows: the end, where the failure is.
LOG_TAIL_CHARS = 20000


class LogSource(Protocol):
    """A running service (or a whole mesh) whose logs explain a failure."""

    name: str

    def logs(self) -> str: ...


_STARTED: list[LogSource] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for source in _STARTED:
            report.sections.append((f"log of {source.name}", source.logs()[-LOG_TAIL_CHARS:]))


def track(source: LogSource) -> LogSource:
    _STARTED.append(source)
    return source


def untrack(source: LogSource) -> None:
    if source in _STARTED:
        _STARTED.remove(source)


def _layer(item: pytest.Item) -> int:
    parts = Path(str(item.path)).parts
    return next((LAYERS.index(part) for part in parts if part in LAYERS), len(LAYERS))


def _place_in_e2e(item: pytest.Item) -> int:
    """The shared mesh's tests, then the one that stops it, then the tests that start meshes of their own."""
    if item.get_closest_marker("ends_mesh") is not None:
        return 1
    return 0 if "mesh" in getattr(item, "fixturenames", ()) else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort: within a place, tests keep their files' order.
    items.sort(key=lambda item: (_layer(item), _place_in_e2e(item) if _layer(item) == LAYERS.index("e2e") else 0))


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    """A tiny random Llama in Hugging Face format, built once into the user's cache (tests/tiny_llama.py)."""
    if VLLM_MISSING:
        pytest.skip("the vLLM engine is not installed: run `make vllm`")
    from tests.tiny_llama import cached_tiny_llama

    return cached_tiny_llama()
