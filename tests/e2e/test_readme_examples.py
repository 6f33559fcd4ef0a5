"""The README's examples, and those `meshserve up` prints, run as written, credential included, against a
running mesh.

Each block of the named sections is run by bash (shell blocks) or by the project's Python (Python blocks) in
a directory that looks like a clone after `make up`: `.meshserve` is the mesh's state directory, `.venv` the
project's environment. Only the edge's address changes, to the test mesh's port.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.jobs_support import FINAL_STATES, JobsClient

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples_of(section: str) -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return _BLOCK.findall(text[start : end if end != -1 else None])


@pytest.fixture
def clone_after_make_up(mesh: Mesh, tmp_path: Path) -> Path:
    (tmp_path / ".meshserve").symlink_to(mesh.state_dir)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def run_as_written(language: str, code: str, mesh: Mesh, directory: Path) -> str:
    code = code.replace("127.0.0.1:8080", f"127.0.0.1:{mesh.port('edge_http')}")
    argv = ["bash", "-eu", "-o", "pipefail", "-c", code] if language == "sh" else [".venv/bin/python", "-c", code]
    done = subprocess.run(argv, cwd=directory, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert '"error"' not in done.stdout, done.stdout
    return done.stdout


def test_the_openai_api_examples_run_as_written(mesh: Mesh, clone_after_make_up: Path) -> None:
    (_, curl), (_, sdk) = examples_of("OpenAI API")
    printed = run_as_written("sh", curl, mesh, clone_after_make_up)
    for expected in ('"text_completion"', '"chat.completion.chunk"', "data: [DONE]", '"object":"list"'):
        assert expected in printed.replace('": "', '":"'), (expected, printed)
    story = run_as_written("sh", sdk, mesh, clone_after_make_up)
    assert len(story.strip()) > 20, story


def test_the_jobs_and_batches_examples_run_as_written(mesh: Mesh, clone_after_make_up: Path) -> None:
    (shell_language, shell), (python_language, python) = examples_of("Jobs and batches")[:2]
    assert (shell_language, python_language) == ("sh", "python")
    printed = run_as_written("sh", shell, mesh, clone_after_make_up)
    for expected in ('"task_id"', '"job"', '"batch_id"', '"jobs"'):
        assert expected in printed, (expected, printed)
    # The shell example leaves jobs behind; they end before the mesh serves the next test.
    readers = JobsClient(mesh, mesh.api_key)
    for job in readers.jobs(limit=50):
        readers.wait_until(job["task_id"], FINAL_STATES)
    answers = run_as_written("python", python, mesh, clone_after_make_up)
    # Each answer is printed after its custom_id; the model's text may itself run over several lines.
    assert sorted(re.findall(r"^(q\d) ", answers, re.MULTILINE)) == ["q0", "q1", "q2"], answers


def examples_printed_by_up(startup_output: str) -> dict[str, str]:
    """The commands `meshserve up` prints once the mesh is up, by label, continuation lines included."""
    block = startup_output[startup_output.index("meshserve is up.") : startup_output.index("Press Ctrl-C")]
    examples: dict[str, str] = {}
    label = ""
    for line in block.splitlines():
        if entry := re.match(r"^  (\S[^:]*):\s{2,}(.*)$", line):
            label = entry[1]
            examples[label] = entry[2]
        elif label and line.startswith("   "):
            examples[label] += "\n" + line
    return examples


def test_the_examples_meshserve_up_prints_run_as_written(mesh: Mesh, clone_after_make_up: Path) -> None:
    examples = examples_printed_by_up(mesh.startup_output)
    assert set(examples) == {"stream over gRPC", "stream over REST", "OpenAI API", "over TLS", "models, devices",
                             "keys and tokens", "logs"}  # fmt: skip
    assert Path(examples.pop("logs").rstrip("/")).is_dir()
    printed = {}
    for label, command in examples.items():
        # The mesh's own environment: the CLI finds the test mesh's ports and state directory as it would
        # find the defaults after `make up`.
        done = subprocess.run(["bash", "-eu", "-o", "pipefail", "-c", command], cwd=clone_after_make_up,
                              env={**os.environ, **mesh.env}, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"{label}: exit {done.returncode}\n{command}\n{done.stdout}\n{done.stderr}"
        assert '"error"' not in done.stdout, (label, done.stdout)
        printed[label] = done.stdout
    # The default base model continues each prompt with words, not markers or nothing.
    story = printed["stream over gRPC"]
    assert len(re.findall(r"[A-Za-z]{2,}", story)) >= 5 and "<" not in story, story
    assert '"text_completion"' in printed["OpenAI API"]
    assert '"gemma-3-270m"' in printed["over TLS"]
    assert '"devices"' in printed["models, devices"] and '"models"' in printed["models, devices"]
    assert "FINISH_REASON_LENGTH" in printed["stream over REST"]
    *key_list, token = printed["keys and tokens"].strip().splitlines()
    assert key_list and re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), printed["keys and tokens"]
