"""Database URLs: which the store takes, the driver each gets, and that passwords never reach a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.store import normalize_url, sqlite_url
from services.store.urls import mask_url, sqlite_file


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("postgresql://app:pw@db.internal:5432/mesh", "postgresql+asyncpg://app:pw@db.internal:5432/mesh"),
        ("postgres://app:pw@db.internal/mesh", "postgresql+asyncpg://app:pw@db.internal/mesh"),
        ("postgresql+asyncpg://app@db.internal/mesh", "postgresql+asyncpg://app@db.internal/mesh"),
        ("postgresql://app@/mesh?host=/run/postgresql", "postgresql+asyncpg://app@/mesh?host=%2Frun%2Fpostgresql"),
        ("sqlite:////var/lib/meshserve/store.db", "sqlite+aiosqlite:////var/lib/meshserve/store.db"),
        ("sqlite+aiosqlite:///relative.db", "sqlite+aiosqlite:///relative.db"),
    ],
)
def test_normalize_url_picks_the_async_driver(given: str, normalized: str) -> None:
    assert normalize_url(given) == normalized


def test_normalize_url_keeps_a_password_with_special_characters() -> None:
    assert normalize_url("postgresql://app:p%40ss%2Fw@db/mesh") == "postgresql+asyncpg://app:p%40ss%2Fw@db/mesh"


@pytest.mark.parametrize(
    "url", ["mysql://app@db/mesh", "postgresql+psycopg2://app@db/mesh", "sqlite+pysqlite:///x.db", "redis://db"]
)
def test_normalize_url_rejects_other_backends_and_drivers(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme"):
        normalize_url(url)


def test_an_unparseable_url_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValueError) as raised:
        normalize_url("not a url with secret-password")
    assert "secret-password" not in str(raised.value)


def test_mask_url_hides_the_password_only() -> None:
    assert mask_url("postgresql+asyncpg://app:hunter2@db:5432/mesh") == "postgresql+asyncpg://app:***@db:5432/mesh"
    assert mask_url("postgresql+asyncpg://app@db/mesh") == "postgresql+asyncpg://app@db/mesh"


def test_sqlite_url_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_url(Path("state/store.db")) == f"sqlite+aiosqlite:///{tmp_path}/state/store.db"
    assert sqlite_file(sqlite_url(Path("state/store.db"))) == tmp_path / "state" / "store.db"


def test_an_in_memory_database_has_no_file() -> None:
    assert sqlite_file("sqlite+aiosqlite://") is None
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
