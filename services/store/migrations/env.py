"""Alembic's entry point, run by services.store.migrate on a connection it already holds in a transaction.

That transaction carries the lock that keeps two processes from migrating at once, so this file neither
connects nor commits: with the connection already in a transaction, alembic runs inside it.
"""

from __future__ import annotations

from alembic import context

from services.store.schema import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("the store's migrations run through services.store.migrate, on an open connection")
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("the store's migrations run online only, through services.store.migrate")
run_migrations_online()
