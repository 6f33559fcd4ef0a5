"""The mesh configuration file: which models exist and how each is served.

One TOML file (deploy/meshserve.toml by default) lists the models. The launcher, the scheduler and each
inference service read it; relative paths in it are relative to the file itself.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, model_validator

# How many requests a model runs at once when its config does not say. llama.cpp gives each slot a
# context of its own, so slots cost memory; vLLM batches sequences into one KV-cache pool, so many are cheap.
_DEFAULT_SLOTS = {"llama_cpp": 2, "llama_cpp_per_slot": 2, "vllm": 16, "simulated": 256}
# Engines that read no model file.
_MODELLESS_ENGINES = frozenset({"simulated"})


class VllmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The KV-cache pool vLLM allocates at load, shared by all running sequences ("2GiB"). Unset, vLLM
    # sizes it (a share of GPU memory, or its CPU default). The scheduler's ledger counts this pool.
    kv_cache_bytes: ByteSize | None = None
    # The weights' data type; "auto" takes the model's own.
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # Run without CUDA graphs or torch.compile: loads sooner, generates slower.
    enforce_eager: bool = False
    # Tokens per streamed message. 1 sends every token the moment it exists; a few per message cut the
    # per-message work of every hop (inference, gateway, Envoy) when many sequences stream at once.
    stream_interval: int = Field(default=1, ge=1)
    # The scheduling priority (nice) of vLLM's engine processes. On a CPU host the engine spins on every
    # core it can get while it generates; a lower priority keeps Envoy, the gateway and the scheduler
    # answering promptly beside it. 0 leaves them at this service's priority.
    engine_niceness: int = Field(default=10, ge=0, le=19)


class SimulatedOptions(BaseModel):
    """The simulated engine's pace and what it reports of itself (services/inference/engines/simulated.py)."""

    model_config = ConfigDict(extra="forbid")

    # Tokens each running sequence gets per second: one step of every sequence per 1 / tokens_per_second.
    tokens_per_second: float = Field(default=50.0, gt=0.0, le=100_000.0)
    # From a request's arrival at the engine to its first token.
    first_token_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    # What the ledger is told the model costs: weights once, and a KV cache per running sequence.
    weights_bytes: ByteSize = ByteSize(1 << 20)
    kv_cache_bytes_per_slot: ByteSize = ByteSize(1 << 16)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    # llama_cpp batches every sequence in one context; llama_cpp_per_slot gives each slot a context (and a
    # copy of the weights) of its own, with llama.cpp's repacked CPU kernels.
    # simulated streams tokens at a set pace with no model: a benchmark tool for the mesh's own ceiling.
    engine: Literal["llama_cpp", "llama_cpp_per_slot", "vllm", "simulated"] = "llama_cpp"
    # Exactly one of: the model on disk, or a Python package whose assemble() writes it there. llama.cpp
    # reads a GGUF file; vLLM reads a Hugging Face directory (config.json, safetensors, tokenizer).
    path: Path | None = None
    package: str | None = None
    # A Jinja chat template; without one, the template embedded in the model file is used.
    chat_template: Path | None = None
    context_length: int = Field(default=2048, ge=16)
    threads: int = Field(default=2, ge=1)
    # Requests served at once: the sequences llama.cpp or vLLM batch together (contexts, for llama_cpp_per_slot).
    slots: int = Field(default=2, ge=1)
    # The most tokens one llama.cpp decode step carries (llama-server's n_batch): a long prompt is read in
    # chunks of this many, between the running sequences' next tokens.
    batch_tokens: int = Field(default=512, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)
    default_temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    default_top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    # Seconds the model stays loaded with no request running; then the scheduler unloads it, and the
    # next request loads it again. Negative keeps it loaded for good.
    keep_alive_seconds: float = 300.0
    # The device the engine runs on, within its node ("gpu0", "host"); empty is the node's first device.
    device: str = ""
    # Settings only the vLLM engine reads: a [models.vllm] table.
    vllm: VllmOptions = Field(default_factory=lambda: VllmOptions())
    # Settings only the simulated engine reads: a [models.simulated] table.
    simulated: SimulatedOptions = Field(default_factory=lambda: SimulatedOptions())

    @model_validator(mode="before")
    @classmethod
    def _engine_default_slots(cls, data: Any) -> Any:
        if isinstance(data, dict) and "slots" not in data:
            return {**data, "slots": _DEFAULT_SLOTS.get(data.get("engine", "llama_cpp"), 2)}
        return data

    @model_validator(mode="after")
    def _a_step_holds_every_sequence(self) -> ModelConfig:
        if self.engine == "llama_cpp" and self.batch_tokens < self.slots:
            raise ValueError(
                f"model {self.name!r}: batch_tokens ({self.batch_tokens}) must be at least slots ({self.slots}), "
                "so that one step decodes a token of every sequence"
            )
        return self

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.engine in _MODELLESS_ENGINES:
            if self.path is not None or self.package is not None:
                raise ValueError(
                    f"model {self.name!r}: the {self.engine} engine reads no model; drop 'path' and 'package'"
                )
            return self
        if (self.path is None) == (self.package is None):
            raise ValueError(f"model {self.name!r}: set exactly one of 'path' and 'package'")
        return self

    def resolve_model_file(self) -> Path:
        """The model file on disk, assembling it from its package first if needed."""
        model = self._resolve_model()
        if not model.is_file():
            raise FileNotFoundError(f"model {self.name!r}: no model file at {model}")
        return model

    def resolve_model_directory(self) -> Path:
        """The Hugging Face model directory, assembling it from its package first if needed."""
        model = self._resolve_model()
        if not (model / "config.json").is_file():
            raise FileNotFoundError(f"model {self.name!r}: no Hugging Face model directory (config.json) at {model}")
        return model

    def _resolve_model(self) -> Path:
        if self.path is not None:
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
