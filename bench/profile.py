"""Where each mesh process spends its CPU while the benchmark runs: py-spy samples every process at once,
and the samples are summed by function, as the share of the process's busy samples that function was on
top of the stack (its own time) or anywhere in it (its time with what it called)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# A frame as py-spy's raw output writes it: "function (path/to/file.py:123)".
_LINE_NUMBER = re.compile(r":\d+\)$")
_TOP = 12


@dataclass(frozen=True)
class Profile:
    role: str
    samples: int
    # (function, share of samples) for the functions most often on top of the stack, and anywhere in it.
    own: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]


class Sampler:
    """py-spy recording each process for `seconds`, started together; read() waits for them and sums."""

    def __init__(self, roles: dict[str, int], seconds: float, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        self._outputs = {role: out_dir / f"{role}.txt" for role in roles}
        self._recorders = {
            role: subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(self._outputs[role]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for role, pid in roles.items()
            if role != "envoy"  # not a Python process
        }

    def read(self) -> list[Profile]:
        profiles = []
        for role, recorder in self._recorders.items():
            recorder.wait()
            if self._outputs[role].exists():
                profiles.append(summarize(role, self._outputs[role].read_text()))
        return profiles


def summarize(role: str, collapsed: str) -> Profile:
    """Own and inclusive shares by function, from py-spy's collapsed stacks ("a;b;c COUNT" a line)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        # The thread's name comes first in py-spy's raw stacks; it is not a function.
        frames = [frame for frame in frames if frame.endswith(")")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return Profile(
        role,
        total,
        [(frame, count / total) for frame, count in own.most_common(_TOP)] if total else [],
        [(frame, count / total) for frame, count in inclusive.most_common(_TOP)] if total else [],
    )


def describe(profiles: list[Profile]) -> str:
    lines = []
    for profile in profiles:
        lines.append(f"{profile.role} ({profile.samples} busy samples): most often on top of the stack")
        lines += [f"  {share:6.1%}  {frame}" for frame, share in profile.own[:8]]
    return "\n".join(lines)
