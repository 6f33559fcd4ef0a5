"""Hosts for multi-node tests, made of Linux network namespaces joined to the root namespace by veth pairs.

Host n has the address 10.<net>.<n>.2; the root namespace reaches it, and is reached from it, at
10.<net>.<n>.1. Cutting a host's link (`cut`) leaves its processes running and its connections open,
as a network partition does: only silence tells the mesh it has gone. Everything made is removed on exit.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class NamespacesUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no `ip`, or a sandbox that forbids it)."""


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    root_link: str
    address: str
    root_address: str

    @property
    def within(self) -> tuple[str, ...]:
        """The command prefix that runs a program on this host."""
        return ("ip", "netns", "exec", self.namespace)

    def cut(self) -> None:
        """Takes the host's link down: it can reach nothing, and nothing reaches it, until `rejoin`."""
        _ip("link", "set", self.root_link, "down")

    def rejoin(self) -> None:
        _ip("link", "set", self.root_link, "up")


def _ip(*args: str, namespace: str = "") -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise NamespacesUnavailable(f"`{' '.join(command)}` failed: {result.stderr.strip()}")


@contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    """`count` hosts, torn down however the block ends. Raises NamespacesUnavailable where they cannot be made."""
    if os.geteuid() != 0:
        raise NamespacesUnavailable("network namespaces need root")
    tag = os.getpid() % 100_000
    net = 100 + tag % 100
    made: list[Host] = []
    try:
        for n in range(1, count + 1):
            host = Host(f"node-{n}", f"ms{tag}n{n}", f"ms{tag}r{n}", f"10.{net}.{n}.2", f"10.{net}.{n}.1")
            _ip("netns", "add", host.namespace)
            made.append(host)
            _ip("link", "add", host.root_link, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
            _ip("addr", "add", f"{host.root_address}/24", "dev", host.root_link)
            _ip("link", "set", host.root_link, "up")
            _ip("addr", "add", f"{host.address}/24", "dev", "eth0", namespace=host.namespace)
            _ip("link", "set", "eth0", "up", namespace=host.namespace)
            _ip("link", "set", "lo", "up", namespace=host.namespace)
            _ip("route", "add", "default", "via", host.root_address, namespace=host.namespace)
        yield made
    finally:
        for host in made:
            # Deleting the namespace deletes its end of the pair, and with it the root end.
            subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True, timeout=30)
            subprocess.run(["ip", "link", "delete", host.root_link], capture_output=True, timeout=30)
