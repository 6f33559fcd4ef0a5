"""Keeps the mesh's processes running: starts them, restarts one that dies, stops them all in order."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.mesh_plan import ChildSpec

_STOP_GRACE_SECONDS = 15.0
_FIRST_RESTART_DELAY = 0.5
_MAX_RESTART_DELAY = 10.0
# A child that ran this long before dying is restarted without delay growth.
_STABLE_AFTER_SECONDS = 30.0


def report_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Child:
    def __init__(self, spec: ChildSpec, logs_dir: Path) -> None:
        self.spec = spec
        self.log_path = logs_dir / f"{spec.name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.restarts = 0

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            # A session of its own: Ctrl-C reaches the launcher alone, which then stops children in order.
            self.process = await asyncio.create_subprocess_exec(
                *self.spec.argv, stdout=log_file, stderr=log_file, start_new_session=True
            )
        self.started_at = time.monotonic()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), _STOP_GRACE_SECONDS)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class Supervisor:
    def __init__(self, specs: list[ChildSpec], logs_dir: Path, report: Callable[[str], None] = report_to_stderr):
        self.children = [Child(spec, logs_dir) for spec in specs]
        self._report = report
        self._stopping = False

    async def start_all(self) -> None:
        for child in self.children:
            await child.start()

    async def keep_running(self) -> None:
        """Restarts any child that exits, until stop_all() is called."""
        await asyncio.gather(*(self._keep(child) for child in self.children))

    async def stop_all(self) -> None:
        self._stopping = True
        for child in reversed(self.children):
            await child.stop()

    async def _keep(self, child: Child) -> None:
        delay = _FIRST_RESTART_DELAY
        while not self._stopping:
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping:
                return
            lived = time.monotonic() - child.started_at
            delay = _FIRST_RESTART_DELAY if lived > _STABLE_AFTER_SECONDS else delay
            exited = f"{child.spec.name} exited with {code} after {lived:.1f}s"
            self._report(f"{exited}; restarting in {delay:.1f}s (log: {child.log_path})")
            await asyncio.sleep(delay)
            if self._stopping:
                return
            child.restarts += 1
            await child.start()
            delay = min(delay * 2, _MAX_RESTART_DELAY)
