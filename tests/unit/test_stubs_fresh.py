"""The committed stubs must be what the protos generate: a proto changed without `make stubs` fails here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

PROTOS = REPO_ROOT / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in (root / "meshserve").rglob("*")
        if path.name.endswith(GENERATED_SUFFIXES)
    }


WIRE = REPO_ROOT / "gateway" / "auth" / "wire"


def wire_files(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in root.glob("*") if path.name.endswith(GENERATED_SUFFIXES)}


def generate(out: Path, protos_root: Path = PROTOS) -> dict[str, bytes]:
    command = [sys.executable, str(PROTOS / "generate_stubs.py"), "--out", str(out), "--protos-root", str(protos_root)]
    subprocess.run([*command, "--wire-out", str(out / "wire")], check=True, capture_output=True)
    return generated_files(out)


def stale_stubs(generated: dict[str, bytes], committed: dict[str, bytes]) -> list[str]:
    names = set(generated) | set(committed)
    return sorted(name for name in names if generated.get(name) != committed.get(name))


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    committed = generated_files(PROTOS)
    assert len(committed) == 18  # six protos, three files each
    assert stale_stubs(generate(tmp_path), committed) == [], "stubs are stale: run `make stubs`"


def test_committed_ext_authz_wire_stubs_match_their_proto(tmp_path: Path) -> None:
    committed = wire_files(WIRE)
    assert len(committed) == 3
    generate(tmp_path)
    assert stale_stubs(wire_files(tmp_path / "wire" / "gateway" / "auth" / "wire"), committed) == []


def test_a_changed_proto_is_detected(tmp_path: Path) -> None:
    changed = tmp_path / "protos"
    shutil.copytree(PROTOS / "meshserve", changed / "meshserve", ignore=shutil.ignore_patterns("*.py*"))
    proto = changed / "meshserve" / "inference" / "v1" / "inference.proto"
    proto.write_text(proto.read_text().replace("string request_id = 9;", "string request_id = 9;\n  string note = 90;"))
    stale = stale_stubs(generate(tmp_path / "out", changed), generated_files(PROTOS))
    assert "meshserve/inference/v1/inference_pb2.py" in stale
