"""Database URLs: the two the store speaks, the drivers it speaks them with, and a form safe to log."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

POSTGRES_DRIVER = "postgresql+asyncpg"
SQLITE_DRIVER = "sqlite+aiosqlite"
# `postgres://` is what Heroku-style hosts hand out; SQLAlchemy itself no longer accepts it.
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", POSTGRES_DRIVER})
_SQLITE_SCHEMES = frozenset({"sqlite", SQLITE_DRIVER})
_IN_MEMORY = frozenset({"", ":memory:"})


def sqlite_url(path: Path) -> str:
    return f"{SQLITE_DRIVER}:///{Path(path).absolute()}"


def store_url(database_url: str, state_dir: Path) -> str:
    """The operator's database, or the embedded default: SQLite in the state directory."""
    return database_url or sqlite_url(state_dir / "meshserve.db")


def normalize_url(url: str) -> str:
    """The URL with the async driver the store uses; ValueError for a backend it does not support."""
    parsed = _parse(url)
    if parsed.drivername in _POSTGRES_SCHEMES:
        return parsed.set(drivername=POSTGRES_DRIVER).render_as_string(hide_password=False)
    if parsed.drivername in _SQLITE_SCHEMES:
        return parsed.set(drivername=SQLITE_DRIVER).render_as_string(hide_password=False)
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: the store takes sqlite:///PATH or postgresql://..."
    )


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and error messages."""
    return _parse(url).render_as_string(hide_password=True)


def is_sqlite(url: str) -> bool:
    return _parse(url).drivername in _SQLITE_SCHEMES


def sqlite_file(url: str) -> Path | None:
    """The database file a SQLite URL names; None for an in-memory database."""
    database = _parse(url).database or ""
    if database in _IN_MEMORY or database.startswith("file:"):
        return None
    return Path(database)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        # The URL itself is left out of the message: it may hold a password.
        raise ValueError("not a database URL (expected sqlite:///PATH or postgresql://USER@HOST/DB)") from None
