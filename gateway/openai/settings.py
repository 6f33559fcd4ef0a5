"""The OpenAI front's settings: environment (MESHSERVE_OPENAI_*) and command-line flags."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.shared.service_settings import StoreServiceSettings


class OpenAISettings(StoreServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSERVE_OPENAI_", cli_prog_name="python -m gateway.openai")

    listen: str = "127.0.0.1:50031"
    # The gateway; replicas as a comma-separated list of IP:PORT, which the front's calls are spread over.
    gateway: str = "127.0.0.1:50041"
    # Only the edge calls the front; the front calls the gateway as "openai".
    allowed_callers: list[str] = ["edge"]
    # A request still running after this long fails with 504. A client may ask for less with the
    # x-meshserve-timeout-seconds header.
    request_timeout_seconds: float = Field(default=600.0, gt=0)
    # How often the front asks the gateway whether the mesh is ready; its /healthz follows the answer.
    health_interval_seconds: float = Field(default=0.5, gt=0)
