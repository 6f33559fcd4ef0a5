"""buf lint and buf breaking run offline on the contracts, and they catch what they are there to catch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

BUF = str(Path(sys.executable).parent / "buf")
INFERENCE_PROTO = Path("protos/meshserve/inference/v1/inference.proto")


def copy_contracts(destination: Path) -> Path:
    shutil.copy(REPO_ROOT / "buf.yaml", destination / "buf.yaml")
    shutil.copytree(REPO_ROOT / "third_party", destination / "third_party")
    shutil.copytree(REPO_ROOT / "protos" / "meshserve", destination / "protos" / "meshserve",
                    ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__"))  # fmt: skip
    return destination


def buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUF, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_contracts_pass_lint() -> None:
    result = buf("lint", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_catches_a_style_violation(tmp_path: Path) -> None:
    copy = copy_contracts(tmp_path)
    proto = copy / INFERENCE_PROTO
    proto.write_text(proto.read_text() + "\nenum badEnum {\n  FIRST = 0;\n}\n")
    result = buf("lint", cwd=copy)
    assert result.returncode != 0
    assert "badEnum" in result.stdout


def test_breaking_catches_a_removed_field(tmp_path: Path) -> None:
    copy = copy_contracts(tmp_path)
    proto = copy / INFERENCE_PROTO
    proto.write_text(proto.read_text().replace("  string request_id = 9;\n", ""))
    result = buf("breaking", str(copy), "--against", str(REPO_ROOT), cwd=copy)
    assert result.returncode != 0
    assert "request_id" in result.stdout
