"""Free loopback ports for the servers tests and benchmarks start, handed out so that no two ever meet.

A port the kernel picks with bind(0) comes from the ephemeral range, the same range outgoing connections
take their source ports from: between picking it and the server binding it, any connection on the machine
may take it. Ports here come from below that range, each checked free, and never handed out twice by one
process; a random starting point keeps two processes that run at once apart.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_LOWEST = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _below_ephemeral() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_ceiling = max(_below_ephemeral(), _LOWEST + 2000)
_lock = threading.Lock()
_next = random.randrange(_LOWEST, _ceiling)
_handed_out: set[int] = set()


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int) -> int:
    """The first of `count` consecutive free ports, for a base port that grows by one a model."""
    global _next
    with _lock:
        for _ in range(_ceiling - _LOWEST):
            first = _next if _next + count <= _ceiling else _LOWEST
            _next = first + count
            block = range(first, first + count)
            if all(port not in _handed_out and _is_free(port) for port in block):
                _handed_out.update(block)
                return first
    raise RuntimeError(f"no {count} consecutive free ports between {_LOWEST} and {_ceiling}")


def free_port() -> int:
    return free_port_block(1)
