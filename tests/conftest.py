"""Shared fixtures. A test that fails prints the logs of the services it used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import VLLM_MISSING, ServiceProcess

_STARTED: list[ServiceProcess] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for process in _STARTED:
            report.sections.append((f"log of {process.name}", process.logs()[-20000:]))


def track(process: ServiceProcess) -> ServiceProcess:
    _STARTED.append(process)
    return process


def untrack(process: ServiceProcess) -> None:
    if process in _STARTED:
        _STARTED.remove(process)


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    """A tiny random Llama in Hugging Face format, built once into the user's cache (tests/tiny_llama.py)."""
    if VLLM_MISSING:
        pytest.skip("the vLLM engine is not installed: run `make vllm`")
    from tests.tiny_llama import cached_tiny_llama

    return cached_tiny_llama()
