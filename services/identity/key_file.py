"""Where a client finds its key: a file only its owner can read."""

from __future__ import annotations

import os
from pathlib import Path


def write_key_file(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    # O_CREAT's mode applies only to a new file.
    path.chmod(0o600)


def read_key_file(path: Path) -> str:
    """The key in the file; empty when there is no such file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
