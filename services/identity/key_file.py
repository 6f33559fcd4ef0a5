"""Secrets on disk: a client's key, and the development issuer's signing keys, in files only their owner reads."""

from __future__ import annotations

import os
from pathlib import Path


def write_private_file(path: Path, data: bytes) -> None:
    """Writes `data` to a file of mode 0600, private from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode applies only to a new file.
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def write_key_file(path: Path, key: str) -> None:
    write_private_file(path, (key + "\n").encode())


def read_key_file(path: Path) -> str:
    """The key in the file; empty when there is no such file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
