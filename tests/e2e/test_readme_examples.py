"""The README's examples run as written, credential included, against a running mesh.

Each block of the named sections is run by bash (shell blocks) or by the project's Python (Python blocks) in
a directory that looks like a clone after `make up`: `.meshserve` is the mesh's state directory, `.venv` the
project's environment. Only the edge's address changes, to the test mesh's port.
"""

from __future__ import annotations

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
