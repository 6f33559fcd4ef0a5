"""The launcher's settings: environment (MESHSERVE_*) and command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class LauncherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSERVE_")

    config: Path = Path("deploy/meshserve.toml")
    # Certificates and logs of a local run.
    state_dir: Path = Path(".meshserve")
    inference_address: str = "127.0.0.1:50061"
    startup_timeout_seconds: float = 300.0

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"
