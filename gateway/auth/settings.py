"""The authorization service's settings: environment (MESHSERVE_AUTH_*) and command-line flags."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.shared.domain import Priority
from services.shared.identity import CallerLimits
from services.shared.service_settings import StoreServiceSettings


class AuthSettings(StoreServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSERVE_AUTH_", cli_prog_name="python -m gateway.auth")

    listen: str = "127.0.0.1:50045"
    # Only the edge asks.
    allowed_callers: list[str] = ["edge"]
    # How long a key's record is used before it is read again: the most a revocation waits.
    key_cache_seconds: float = Field(default=0.5, gt=0, le=1.0)
    # While the store is down, keys read within this long keep working.
    key_stale_seconds: float = Field(default=300.0, ge=0)
    # What a JWT grants besides its scopes.
    token_max_priority: str = Field(default="HIGH", pattern="^(LOW|NORMAL|HIGH|CRITICAL)$")
    token_requests_per_minute: int | None = Field(default=None, ge=1)
    token_tokens_per_minute: int | None = Field(default=None, ge=1)
    token_max_concurrent: int | None = Field(default=None, ge=1)
    # Audit records older than this are deleted, hourly.
    audit_retention_days: float = Field(default=90.0, gt=0)

    def token_limits(self) -> CallerLimits:
        return CallerLimits(
            self.token_requests_per_minute, self.token_tokens_per_minute, self.token_max_concurrent,
            Priority[self.token_max_priority],
        )  # fmt: skip
