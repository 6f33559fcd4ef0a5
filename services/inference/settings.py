"""The inference service's settings: environment (MESHSERVE_INFERENCE_*) and command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.shared.service_settings import ServiceSettings


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSERVE_INFERENCE_", cli_prog_name="python -m services.inference")

    # The mesh config file, and which of its models this service runs (empty: the first).
    config: Path = Path("deploy/meshserve.toml")
    model: str = ""
    listen: str = "127.0.0.1:50061"
    # The gateway calls Generate; the scheduler reads GetModelInfo and unloads idle models.
    allowed_callers: list[str] = ["gateway", "scheduler"]
    # Prompts and completions go into traces only when an operator opts in: they may hold personal data.
    trace_content: bool = False
