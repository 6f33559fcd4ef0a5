"""Generates the Python stubs of meshserve's protos: `make stubs`.

The stubs are committed beside their .proto files, so that `protos/` is the import root of the
`meshserve.<service>.v1` packages, and the repository root that of the wire declarations of Envoy's
ext_authz API (gateway/auth/wire). With --out, they are written elsewhere instead, which is how the
test suite checks that the committed stubs are fresh.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

PROTOS_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTOS_ROOT.parent
GOOGLEAPIS_ROOT = REPO_ROOT / "third_party" / "googleapis"
WIRE_PROTOS = [REPO_ROOT / "gateway" / "auth" / "wire" / "ext_authz.proto"]


def proto_files(protos_root: Path = PROTOS_ROOT) -> list[Path]:
    return sorted((protos_root / "meshserve").rglob("*.proto"))


def generate(out_dir: Path, protos_root: Path = PROTOS_ROOT, wire_out_dir: Path = REPO_ROOT) -> None:
    sources = [str(path.relative_to(protos_root)) for path in proto_files(protos_root)]
    _protoc(protos_root, out_dir, sources)
    write_package_markers(out_dir, sources)
    _protoc(REPO_ROOT, wire_out_dir, [str(path.relative_to(REPO_ROOT)) for path in WIRE_PROTOS])


def _protoc(import_root: Path, out_dir: Path, sources: list[str]) -> None:
    well_known_types = str(files("grpc_tools").joinpath("_proto"))
    args = [
        "protoc",
        f"--proto_path={import_root}",
        f"--proto_path={GOOGLEAPIS_ROOT}",
        f"--proto_path={well_known_types}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def write_package_markers(out_dir: Path, sources: list[str]) -> None:
    # Every directory on the way to a stub becomes a regular package, so setuptools finds it.
    for source in sources:
        package_dir = (out_dir / source).parent
        while package_dir != out_dir:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTOS_ROOT, help="where to write the stubs")
    parser.add_argument("--protos-root", type=Path, default=PROTOS_ROOT, help="where the .proto files are")
    parser.add_argument("--wire-out", type=Path, default=REPO_ROOT, help="where to write the ext_authz wire stubs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.wire_out.mkdir(parents=True, exist_ok=True)
    generate(args.out, args.protos_root, args.wire_out)
    print(f"generated stubs for {len(proto_files(args.protos_root))} protos in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
