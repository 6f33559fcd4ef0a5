"""Shared fixtures. A test that fails prints the logs of the services it used."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ServiceProcess

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
