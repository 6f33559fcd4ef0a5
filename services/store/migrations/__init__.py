"""Alembic's script directory for the store. A package, so that its files ship with meshserve."""
