"""The GPU monitor's settings: environment (MESHSERVE_GPU_MONITOR_*) and command-line flags."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.gpu_monitor.core.interval import MAX_INTERVAL_SECONDS, MIN_INTERVAL_SECONDS
from services.gpu_monitor.core.sources import SourceMode
from services.shared.service_settings import NodeName, ServiceSettings


class GpuMonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MESHSERVE_GPU_MONITOR_", cli_prog_name="python -m services.gpu_monitor"
    )

    listen: str = "127.0.0.1:50071"
    # Names the node in every device_id ("<node>/gpu0", "<node>/host"), so it must be unique in the mesh.
    node_name: NodeName = Field(default_factory=socket.gethostname)
    # auto: NVML where it initialises and reports a GPU, else host memory; nvml: fail without a GPU.
    # replay: a drill, playing back the readings recorded in replay_file.
    source: Literal["auto", "nvml", "host", "replay"] = "auto"
    replay_file: Path | None = None
    # The watch interval when a request leaves it unset.
    interval_seconds: float = Field(default=1.0, ge=MIN_INTERVAL_SECONDS, le=MAX_INTERVAL_SECONDS)
    # The scheduler watches readings; operators may read them with the cli certificate.
    allowed_callers: list[str] = ["scheduler", "cli"]

    def source_mode(self) -> SourceMode:
        return SourceMode(self.source)
