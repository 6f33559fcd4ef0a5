"""The package boundaries the design relies on, checked from the source.

Cores stay free of grpc (so they are tested without a server), and no service imports another service:
what they share lives in services.shared and telemetry.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

CORES = [
    "gateway.core", "gateway.auth.core", "orchestrator.scheduler.core", "services.inference.core",
    "services.gpu_monitor.core",
]  # fmt: skip

# Each component, and the components it must never import.
SERVICES = ["gateway", "orchestrator", "services.inference", "services.gpu_monitor"]
FORBIDDEN = {
    **{service: [other for other in SERVICES if other != service] for service in SERVICES},
    "services.shared": SERVICES,
    "telemetry": [*SERVICES, "services.shared"],
}


def modules_of(package: str) -> list[str]:
    path = REPO_ROOT / package.replace(".", "/")
    return [package] + [f"{package}.{info.name}" for info in pkgutil.iter_modules([str(path)])]


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def inside(module: str, component: str) -> bool:
    return module == component or module.startswith(component + ".")


@pytest.mark.parametrize("core", CORES)
def test_a_core_never_imports_grpc(core: str) -> None:
    modules = modules_of(core)
    assert len(modules) > 1, f"no modules found in {core}"
    imports = "; ".join(f"import {module}" for module in modules)
    check = f"import sys; {imports}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]", f"{core} pulls in grpc"


def test_the_openai_fronts_request_logic_never_imports_grpc() -> None:
    # The routes are the front's thin shell (its servicer); what they call is pure.
    modules = ["gateway.openai.schema", "gateway.openai.translate", "gateway.openai.responses", "gateway.openai.errors"]
    check = (
        f"import sys; import {', '.join(modules)}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"


def test_the_scheduler_core_is_a_state_machine_without_asyncio() -> None:
    for module in modules_of("orchestrator.scheduler.core"):
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        if path.exists():
            assert "asyncio" not in imports_of(path), module


@pytest.mark.parametrize("component", sorted(FORBIDDEN))
def test_no_component_imports_another_service(component: str) -> None:
    files = sorted((REPO_ROOT / component.replace(".", "/")).rglob("*.py"))
    assert files, f"no source under {component}"
    crossings = [
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in files
        if "_pb2" not in path.name
        for name in sorted(imports_of(path))
        if any(inside(name, forbidden) for forbidden in FORBIDDEN[component])
    ]
    assert crossings == []
