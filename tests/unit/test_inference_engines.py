"""Choosing an engine: only the one a model asks for is imported, and a missing one says how to install it."""

import builtins

import pytest

from services.inference.app import EngineNotInstalled, build_engine
from services.shared.mesh_config import ModelConfig


def test_a_missing_vllm_extra_is_reported_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def without_vllm(name: str, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "services.inference.engines.vllm", raising=False)
    monkeypatch.setattr(builtins, "__import__", without_vllm)
    config = ModelConfig(name="tiny", engine="vllm", path="/models/tiny")
    with pytest.raises(EngineNotInstalled, match="make vllm") as refused:
        build_engine(config)
    assert "'tiny'" in str(refused.value) and "vllm engine" in str(refused.value)


def test_the_llama_cpp_engine_is_built_for_a_llama_cpp_model() -> None:
    engine = build_engine(ModelConfig(name="gemma", path="/models/gemma.gguf"))
    assert type(engine).__name__ == "LlamaCppEngine"
